//! Scalar functions the Insights compiler (and SQL users) need beyond DataFusion's own:
//! `json_get(text, 'a.b.0.c')`, `json_array(text)` and `regex_extract(text, re, group)`.

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;
use std::sync::Arc;

/// Every function here, for registration.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(JsonGet::new()),
        ScalarUDF::from(JsonArray::new()),
        ScalarUDF::from(RegexExtract::new()),
    ]
}

/// `redact(text)`: a body (JSON text) or a whole record (`@message`) with a redaction
/// profile applied. Built per query for callers whose content level is `redacted`.
#[derive(Debug)]
pub struct Redact {
    redactor: Arc<logbook_redact::Redactor>,
    record: bool,
    signature: Signature,
}

impl Redact {
    /// Mask with `redactor`; `record`: the text is a whole record (only bodies masked).
    pub fn new(redactor: Arc<logbook_redact::Redactor>, record: bool) -> Self {
        Redact {
            redactor,
            record,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl PartialEq for Redact {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.redactor, &o.redactor) && self.record == o.record
    }
}
impl Eq for Redact {}
impl std::hash::Hash for Redact {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.redactor) as usize).hash(h);
        self.record.hash(h);
    }
}

impl ScalarUDFImpl for Redact {
    fn name(&self) -> &str {
        if self.record {
            "redact_record"
        } else {
            "redact"
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = strings(&args.args[0], args.number_rows)?;
        let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("redact: expected text");
        };
        let mut b = StringBuilder::with_capacity(text.len(), text.len() * 64);
        for i in 0..text.len() {
            if text.is_null(i) {
                b.append_null();
            } else if self.record {
                let r = self.redactor.redact_record(text.value(i).as_bytes());
                b.append_value(String::from_utf8_lossy(&r));
            } else {
                b.append_value(self.redactor.redact_text(text.value(i)));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

/// Walk a dotted path (`messages.0.content`) into a JSON value.
pub fn walk<'v>(mut v: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(v);
    }
    for seg in path.split('.') {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A JSON value as a field value: strings unquoted, null as none, the rest as JSON text.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn strings(v: &ColumnarValue, n: usize) -> Result<ArrayRef> {
    let a = v.to_array(n)?;
    Ok(datafusion::arrow::compute::cast(&a, &DataType::Utf8)?)
}

fn scalar_str(v: &ColumnarValue, what: &str) -> Result<String> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)))
        | ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(s)))
        | ColumnarValue::Scalar(ScalarValue::Utf8View(Some(s))) => Ok(s.clone()),
        ColumnarValue::Scalar(ScalarValue::Int64(Some(i))) => Ok(i.to_string()),
        _ => exec_err!("{what} must be a constant string"),
    }
}

fn is_json_start(s: &str) -> bool {
    matches!(s.trim_start().as_bytes().first(), Some(b'{') | Some(b'['))
}

macro_rules! udf_boilerplate {
    ($t:ident, $name:expr, $sig:expr) => {
        /// See the module documentation.
        #[derive(Debug, PartialEq, Eq, Hash)]
        pub struct $t {
            signature: Signature,
        }
        impl $t {
            /// A new instance.
            pub fn new() -> Self {
                $t { signature: $sig }
            }
        }
        impl Default for $t {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

udf_boilerplate!(
    JsonGet,
    "json_get",
    Signature::any(2, Volatility::Immutable)
);
udf_boilerplate!(
    JsonArray,
    "json_array",
    Signature::any(1, Volatility::Immutable)
);
udf_boilerplate!(
    RegexExtract,
    "regex_extract",
    Signature::any(3, Volatility::Immutable)
);

// `strip_bodies(record)`: a whole record (`@message`) without its bodies (the `*Body*`
// members of `input` and `output`), for callers whose content level is `metadata`: they
// still see who called what, when, and what it cost.
udf_boilerplate!(
    StripBodies,
    "strip_bodies",
    Signature::any(1, Volatility::Immutable)
);

pub use logbook_record::raw::strip_bodies;

// `rebuild_message(message, input_body_json, output_body_json)`: the record as journaled,
// from the store's `message` (each body cut out, a mark in its place) and the body columns
// (`logbook_store::schema::rebuild_message`). Applied where a group's rows are read, so
// every query, filter and export sees `@message` byte for byte as recorded.
udf_boilerplate!(
    RebuildMessage,
    "rebuild_message",
    Signature::any(3, Volatility::Immutable)
);

impl ScalarUDFImpl for RebuildMessage {
    fn name(&self) -> &str {
        "rebuild_message"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let cols = [0, 1, 2].map(|i| strings(&args.args[i], args.number_rows));
        let [m, inb, outb] = cols;
        let (m, inb, outb) = (m?, inb?, outb?);
        let (Some(m), Some(inb), Some(outb)) = (
            m.as_any().downcast_ref::<StringArray>(),
            inb.as_any().downcast_ref::<StringArray>(),
            outb.as_any().downcast_ref::<StringArray>(),
        ) else {
            return exec_err!("rebuild_message: expected text");
        };
        let mut b = StringBuilder::with_capacity(m.len(), m.value_data().len() * 2);
        for i in 0..m.len() {
            if m.is_null(i) {
                b.append_null();
                continue;
            }
            fn get(a: &StringArray, i: usize) -> Option<&str> {
                a.is_valid(i).then(|| a.value(i))
            }
            b.append_value(logbook_store::schema::rebuild_message(
                m.value(i),
                get(inb, i),
                get(outb, i),
            ));
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

impl ScalarUDFImpl for StripBodies {
    fn name(&self) -> &str {
        "strip_bodies"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = strings(&args.args[0], args.number_rows)?;
        let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("strip_bodies: expected text");
        };
        let mut b = StringBuilder::with_capacity(text.len(), text.len() * 64);
        for i in 0..text.len() {
            if text.is_null(i) {
                b.append_null();
            } else {
                b.append_option(strip_bodies(text.value(i)));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

impl ScalarUDFImpl for JsonGet {
    fn name(&self) -> &str {
        "json_get"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let path = scalar_str(&args.args[1], "json_get's path")?;
        let text = strings(&args.args[0], args.number_rows)?;
        let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("json_get: expected text");
        };
        let mut b = StringBuilder::with_capacity(text.len(), text.len() * 8);
        for i in 0..text.len() {
            if text.is_null(i) {
                b.append_null();
                continue;
            }
            let s = text.value(i);
            if !is_json_start(s) {
                b.append_null();
                continue;
            }
            match serde_json::from_str::<Value>(s) {
                Ok(v) => b.append_option(walk(&v, &path).and_then(value_text)),
                Err(_) => b.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

impl ScalarUDFImpl for JsonArray {
    fn name(&self) -> &str {
        "json_array"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Utf8,
            true,
        ))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = strings(&args.args[0], args.number_rows)?;
        let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("json_array: expected text");
        };
        let mut b = ListBuilder::new(StringBuilder::new());
        for i in 0..text.len() {
            if text.is_null(i) {
                b.append_null();
                continue;
            }
            let s = text.value(i);
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) => {
                    for it in &items {
                        b.values().append_option(value_text(it));
                    }
                    b.append(true);
                }
                // Anything else counts as a one-element list (as in Logs Insights).
                _ => {
                    b.values().append_value(s);
                    b.append(true);
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

impl ScalarUDFImpl for RegexExtract {
    fn name(&self) -> &str {
        "regex_extract"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pattern = scalar_str(&args.args[1], "regex_extract's pattern")?;
        let group = scalar_str(&args.args[2], "regex_extract's group")?;
        let re = match regex::Regex::new(&pattern) {
            Ok(r) => r,
            Err(e) => return exec_err!("regex_extract: {e}"),
        };
        let text = strings(&args.args[0], args.number_rows)?;
        let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("regex_extract: expected text");
        };
        let idx = group.parse::<usize>().ok();
        let mut b = StringBuilder::with_capacity(text.len(), text.len() * 8);
        for i in 0..text.len() {
            if text.is_null(i) {
                b.append_null();
                continue;
            }
            let caps = re.captures(text.value(i));
            let m = caps.as_ref().and_then(|c| match idx {
                Some(n) => c.get(n),
                None => c.name(&group),
            });
            b.append_option(m.map(|m| m.as_str()));
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

/// An exact percentile (`p` in 0..=1) with linear interpolation between closest ranks, as
/// DuckDB's `quantile_cont` computes it (DataFusion's `percentile_cont` quantizes the
/// interpolation weight to six decimals, which would make answers differ in the last digits).
pub fn exact_percentile(p: f64) -> datafusion::logical_expr::AggregateUDF {
    use datafusion::logical_expr::{create_udaf, Accumulator};
    #[derive(Debug)]
    struct Acc {
        p: f64,
        values: Vec<f64>,
    }
    impl Accumulator for Acc {
        fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
            let a = datafusion::arrow::compute::cast(&values[0], &DataType::Float64)?;
            if let Some(a) = a
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
            {
                self.values.extend(a.iter().flatten());
            }
            Ok(())
        }
        fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
            if let Some(l) = states[0]
                .as_any()
                .downcast_ref::<datafusion::arrow::array::ListArray>()
            {
                for i in 0..l.len() {
                    if l.is_valid(i) {
                        self.update_batch(&[l.value(i)])?;
                    }
                }
            }
            Ok(())
        }
        fn state(&mut self) -> Result<Vec<ScalarValue>> {
            let vals: Vec<ScalarValue> = self
                .values
                .iter()
                .map(|v| ScalarValue::Float64(Some(*v)))
                .collect();
            Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
                &vals,
                &DataType::Float64,
            ))])
        }
        fn evaluate(&mut self) -> Result<ScalarValue> {
            if self.values.is_empty() {
                return Ok(ScalarValue::Float64(None));
            }
            self.values.sort_by(|a, b| a.total_cmp(b));
            let n = self.values.len();
            let pos = self.p * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            let (a, b) = (self.values[lo], self.values[hi.min(n - 1)]);
            let v = if lo == hi {
                a
            } else {
                a + (b - a) * (pos - lo as f64)
            };
            Ok(ScalarValue::Float64(Some(v)))
        }
        fn size(&self) -> usize {
            std::mem::size_of::<Self>() + self.values.capacity() * 8
        }
    }
    create_udaf(
        "pct",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(Box::new(Acc {
                p,
                values: Vec::new(),
            }))
        }),
        Arc::new(vec![DataType::List(Arc::new(Field::new(
            "item",
            DataType::Float64,
            true,
        )))]),
    )
}
