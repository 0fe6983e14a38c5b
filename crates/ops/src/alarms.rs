//! CloudWatch-style metric alarms, without I/O: definitions as `PutMetricAlarm` takes
//! them, validation with the API's messages, and evaluation ("M out of N" datapoints,
//! the comparison operators, treat-missing-data) into `OK`, `ALARM` or
//! `INSUFFICIENT_DATA`.

use serde::{Deserialize, Serialize};

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    /// Within the threshold.
    #[serde(rename = "OK")]
    Ok,
    /// Breaching.
    #[serde(rename = "ALARM")]
    Alarm,
    /// Not enough data to tell.
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    /// Parse the API's name.
    pub fn parse(s: &str) -> Option<AlarmState> {
        match s {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
}

/// An alarm as `PutMetricAlarm` defines it (the members Logbook supports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlarmDef {
    /// Unique name.
    pub alarm_name: String,
    /// Free text.
    #[serde(default)]
    pub alarm_description: Option<String>,
    /// `AWS/Bedrock`.
    pub namespace: String,
    /// e.g. `InvocationThrottles`.
    pub metric_name: String,
    /// The `ModelId` dimension's value (Bedrock publishes per model).
    #[serde(default)]
    pub model_id: Option<String>,
    /// `SampleCount`, `Sum`, `Average`, `Minimum`, `Maximum`, or a percentile `pNN`.
    pub statistic: String,
    /// Seconds: 10, 30 or a multiple of 60.
    pub period: i64,
    /// N: the periods looked at.
    pub evaluation_periods: u32,
    /// M: breaching periods among N that make `ALARM` (default N).
    pub datapoints_to_alarm: u32,
    /// The threshold.
    pub threshold: f64,
    /// `GreaterThanThreshold`, `GreaterThanOrEqualToThreshold`, `LessThanThreshold`,
    /// `LessThanOrEqualToThreshold`.
    pub comparison_operator: String,
    /// `missing` (default), `ignore`, `breaching`, `notBreaching`.
    pub treat_missing_data: String,
    /// Actions run on transitions.
    pub actions_enabled: bool,
    /// On entering `ALARM`.
    #[serde(default)]
    pub alarm_actions: Vec<String>,
    /// On entering `OK`.
    #[serde(default, rename = "OKActions")]
    pub ok_actions: Vec<String>,
    /// On entering `INSUFFICIENT_DATA`.
    #[serde(default)]
    pub insufficient_data_actions: Vec<String>,
}

const COMPARISONS: &[&str] = &[
    "GreaterThanThreshold",
    "GreaterThanOrEqualToThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
];
const MISSING: &[&str] = &["missing", "ignore", "breaching", "notBreaching"];

impl AlarmDef {
    /// What is wrong with it, in the API's words.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.alarm_name;
        if n.is_empty() || n.chars().count() > 255 {
            return Err("The parameter AlarmName must be between 1 and 255 characters.".into());
        }
        if !COMPARISONS.contains(&self.comparison_operator.as_str()) {
            return Err(format!(
                "The parameter ComparisonOperator must be one of {}.",
                COMPARISONS.join(", ")
            ));
        }
        if !MISSING.contains(&self.treat_missing_data.as_str()) {
            return Err(format!(
                "The parameter TreatMissingData must be one of {}.",
                MISSING.join(", ")
            ));
        }
        if self.period <= 0 || !(self.period % 60 == 0 || [10, 30].contains(&self.period)) {
            return Err("The parameter Period must be 10, 30 or a multiple of 60.".into());
        }
        if self.evaluation_periods == 0 {
            return Err("The parameter EvaluationPeriods must be at least 1.".into());
        }
        if self.datapoints_to_alarm == 0 || self.datapoints_to_alarm > self.evaluation_periods {
            return Err("DatapointsToAlarm must be between 1 and EvaluationPeriods.".into());
        }
        if i64::from(self.evaluation_periods) * self.period > 7 * 86_400 {
            return Err(
                "The evaluation period (Period x EvaluationPeriods) must be at most 7 days.".into(),
            );
        }
        if !self.threshold.is_finite() {
            return Err("The parameter Threshold must be a number.".into());
        }
        let stat_ok = matches!(
            self.statistic.as_str(),
            "SampleCount" | "Sum" | "Average" | "Minimum" | "Maximum"
        ) || self
            .statistic
            .strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| (0.0..=100.0).contains(&p));
        if !stat_ok {
            return Err(format!("The statistic {:?} is not valid.", self.statistic));
        }
        Ok(())
    }

    fn breaches(&self, v: f64) -> bool {
        match self.comparison_operator.as_str() {
            "GreaterThanThreshold" => v > self.threshold,
            "GreaterThanOrEqualToThreshold" => v >= self.threshold,
            "LessThanThreshold" => v < self.threshold,
            _ => v <= self.threshold,
        }
    }

    /// The state the last N periods call for (`values`, oldest first, `None` where a
    /// period had no data), with the reason CloudWatch would give; `current` is kept
    /// when the data says nothing (`ignore` with no data).
    pub fn evaluate(&self, values: &[Option<f64>], current: AlarmState) -> (AlarmState, String) {
        let n = self.evaluation_periods as usize;
        let recent: Vec<Option<f64>> = values.iter().rev().take(n).rev().copied().collect();
        let present: Vec<f64> = recent.iter().flatten().copied().collect();
        let missing = n.saturating_sub(present.len());
        let mut breaching = present.iter().filter(|v| self.breaches(**v)).count();
        match self.treat_missing_data.as_str() {
            "breaching" => breaching += missing,
            "notBreaching" => {}
            "ignore" if present.is_empty() => {
                return (
                    current,
                    "No datapoints: state kept (treatMissingData: ignore).".into(),
                )
            }
            _ if present.is_empty() => {
                return (
                    AlarmState::InsufficientData,
                    format!("Insufficient Data: {n} datapoints were unknown."),
                )
            }
            _ => {}
        }
        let shown: Vec<String> = present.iter().map(|v| format!("{v}")).collect();
        let reason = |word: &str| {
            format!(
                "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] {} the threshold ({}) ({word}).",
                shown.join(", "),
                if breaching > 0 { "were past" } else { "were not past" },
                self.threshold
            )
        };
        if breaching >= self.datapoints_to_alarm as usize {
            (
                AlarmState::Alarm,
                reason("minimum datapoints for ALARM reached"),
            )
        } else {
            (AlarmState::Ok, reason("fewer than the datapoints to alarm"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn def(m: u32, n: u32, missing: &str) -> AlarmDef {
        AlarmDef {
            alarm_name: "a".into(),
            alarm_description: None,
            namespace: "AWS/Bedrock".into(),
            metric_name: "InvocationClientErrors".into(),
            model_id: Some("m".into()),
            statistic: "Sum".into(),
            period: 300,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            threshold: 50.0,
            comparison_operator: "GreaterThanThreshold".into(),
            treat_missing_data: missing.into(),
            actions_enabled: true,
            alarm_actions: vec![],
            ok_actions: vec![],
            insufficient_data_actions: vec![],
        }
    }

    #[test]
    fn m_out_of_n_and_missing_data() {
        let d = def(2, 2, "missing");
        assert_eq!(
            d.evaluate(&[Some(60.0), Some(70.0)], AlarmState::Ok).0,
            AlarmState::Alarm
        );
        assert_eq!(
            d.evaluate(&[Some(60.0), Some(10.0)], AlarmState::Alarm).0,
            AlarmState::Ok
        );
        assert_eq!(
            d.evaluate(&[Some(50.0), Some(51.0)], AlarmState::Ok).0,
            AlarmState::Ok
        );
        assert_eq!(
            d.evaluate(&[None, None], AlarmState::Ok).0,
            AlarmState::InsufficientData
        );
        assert_eq!(
            def(2, 2, "breaching")
                .evaluate(&[None, Some(60.0)], AlarmState::Ok)
                .0,
            AlarmState::Alarm
        );
        assert_eq!(
            def(2, 2, "notBreaching")
                .evaluate(&[None, Some(60.0)], AlarmState::Alarm)
                .0,
            AlarmState::Ok
        );
        assert_eq!(
            def(1, 2, "ignore")
                .evaluate(&[None, None], AlarmState::Alarm)
                .0,
            AlarmState::Alarm
        );
        // Only the last N values count.
        assert_eq!(
            def(1, 1, "missing")
                .evaluate(&[Some(99.0), Some(1.0)], AlarmState::Alarm)
                .0,
            AlarmState::Ok
        );
        let (_, why) = d.evaluate(&[Some(60.0), Some(70.0)], AlarmState::Ok);
        assert!(
            why.starts_with("Threshold Crossed: 2 out of the last 2 datapoints [60, 70]"),
            "{why}"
        );
    }

    #[test]
    fn validation_speaks_the_apis_words() {
        assert!(def(2, 2, "missing").validate().is_ok());
        let mut d = def(3, 2, "missing");
        assert!(d.validate().unwrap_err().contains("DatapointsToAlarm"));
        d = def(1, 1, "sometimes");
        assert!(d.validate().unwrap_err().contains("TreatMissingData"));
        d = def(1, 1, "missing");
        d.period = 45;
        assert!(d.validate().unwrap_err().contains("Period"));
        d.period = 60;
        d.comparison_operator = "Bigger".into();
        assert!(d.validate().unwrap_err().contains("ComparisonOperator"));
        d.comparison_operator = "LessThanThreshold".into();
        d.statistic = "Median".into();
        assert!(d.validate().is_err());
        d.statistic = "p99".into();
        assert!(d.validate().is_ok());
        d.evaluation_periods = 100_000;
        d.datapoints_to_alarm = 1;
        assert!(d.validate().unwrap_err().contains("7 days"));
    }
}
