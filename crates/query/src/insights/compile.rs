//! Compile a Logs Insights query into a DataFusion plan over a log group's frame.
//!
//! The frame's columns carry the names Insights uses (`@timestamp`, `identity.arn`,
//! `input.inputTokenCount`, ...), so a field is a column reference when it exists, a
//! `json_get` below the nearest JSON-valued column when it is a deeper dotted path, and,
//! when unqualified, the unique known field whose path ends with it.

use super::ast::{self, BinOp, Command, ParsePattern, Period, Proj};
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::common::{Column, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::logical_expr::{
    binary_expr, cast, in_list, lit, try_cast, when, Expr, ExprFunctionExt, ExprSchemable,
    Operator, SortExpr,
};
use datafusion::prelude::SessionContext;
use std::collections::{BTreeSet, HashMap};
use std::ops::Not;

/// A query that cannot be planned (unknown function, wrong arguments, ...).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The query is wrong.
    #[error("{0}")]
    Query(String),
    /// DataFusion refused the plan.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

type R<T> = Result<T, CompileError>;

fn bad<T>(msg: impl Into<String>) -> R<T> {
    Err(CompileError::Query(msg.into()))
}

/// The result of compiling: the frame, the columns to show, and whether it aggregated.
pub struct Compiled {
    /// The plan, projected to `columns`.
    pub frame: DataFrame,
    /// Output column names.
    pub columns: Vec<String>,
    /// Whether a `stats` ran (no `@ptr`).
    pub aggregated: bool,
}

/// Columns whose values are JSON text (dotted paths below them are extracted).
const JSON_ROOTS: &[&str] = &[
    "input.inputBodyJson",
    "output.outputBodyJson",
    "requestMetadata",
    "@message",
];

/// Whether `name` is an aggregate function of `stats`.
pub fn is_aggregate(name: &str) -> bool {
    Compiler::is_aggregate(name)
}

struct Compiler<'a> {
    ctx: &'a SessionContext,
    discovered: &'a BTreeSet<String>,
    /// Columns holding JSON text that were created by the query (jsonParse, unnest).
    json_aliases: BTreeSet<String>,
    aggregated: bool,
}

fn col(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn names(df: &DataFrame) -> Vec<String> {
    df.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// Compile `query` against `frame` (built by [`crate::frame`]), with `discovered` paths
/// for unqualified-name resolution and `limit` as the API's cap. `partials`, when given,
/// holds what rows left out of `frame` add to the query's first command, a `stats` that
/// [`crate::from_rollups::grain`] accepted: the two are aggregated alike and added.
pub fn compile(
    ctx: &SessionContext,
    frame: DataFrame,
    query: &ast::Query,
    discovered: &BTreeSet<String>,
    limit: usize,
    mut partials: Option<DataFrame>,
) -> R<Compiled> {
    let mut c = Compiler {
        ctx,
        discovered,
        json_aliases: BTreeSet::new(),
        aggregated: false,
    };
    let mut df = frame;
    let mut shown: Vec<String> = Vec::new();
    let mut display: Option<Vec<String>> = None;
    let mut sort: Option<Vec<SortExpr>> = None;
    let mut user_limit: Option<usize> = None;
    let n = query.commands.len();
    if partials.is_some() && !matches!(query.commands.first(), Some(Command::Stats { .. })) {
        return bad("rows from rollups need a query that starts with stats");
    }
    for (i, cmd) in query.commands.iter().enumerate() {
        if user_limit.is_some() && !matches!(cmd, Command::Limit(_)) {
            // A limit applies where it stands; later commands see only those rows.
            if let Some(l) = user_limit.take() {
                df = apply_sort(df, sort.take())?.limit(0, Some(l))?;
            }
        }
        match cmd {
            Command::Fields(projs) => {
                for p in projs {
                    df = c.project(df, p)?;
                    push_unique(&mut shown, p.name());
                }
            }
            Command::Display(projs) => {
                let mut d = Vec::new();
                for p in projs {
                    df = c.project(df, p)?;
                    push_unique(&mut d, p.name());
                }
                display = Some(d);
            }
            Command::Filter(e) => {
                df = apply_sort(df, sort.take())?;
                let e = c.expr(&df, e)?;
                df = df.filter(e)?;
            }
            Command::Stats { aggs, by } => {
                df = apply_sort(df, sort.take())?;
                let (d, cols) = c.stats(df, aggs, by, partials.take())?;
                df = d;
                shown = cols;
                display = None;
            }
            Command::Sort(keys) => {
                let mut s = Vec::new();
                for (e, desc) in keys {
                    let e = c.expr(&df, e)?;
                    // Records without the field come last either way: a top (or bottom)
                    // N is of the records that have it, as in CloudWatch.
                    s.push(e.sort(!desc, false));
                }
                sort = Some(s);
            }
            Command::Limit(l) => {
                let l = usize::try_from(*l).unwrap_or(usize::MAX);
                user_limit = Some(user_limit.map_or(l, |u| u.min(l)));
            }
            Command::Parse { field, pattern } => {
                df = c.parse(df, field.as_ref(), pattern)?;
                if let ParsePattern::Glob(_, ns) = pattern {
                    for n in ns {
                        push_unique(&mut shown, n.clone());
                    }
                } else if let ParsePattern::Regex(re) = pattern {
                    for n in regex_names(re) {
                        push_unique(&mut shown, n);
                    }
                }
            }
            Command::Dedup(fields) => {
                if i + 1 < n
                    && !query.commands[i + 1..]
                        .iter()
                        .all(|c| matches!(c, Command::Limit(_)))
                {
                    return bad("only 'limit' may follow 'dedup'");
                }
                let order = match sort.clone() {
                    Some(s) => s,
                    None if c.aggregated => Vec::new(),
                    None => vec![col("@timestamp").sort(false, false)],
                };
                let keys = fields
                    .iter()
                    .map(|f| c.expr(&df, f))
                    .collect::<R<Vec<_>>>()?;
                let rn = datafusion::functions_window::expr_fn::row_number()
                    .partition_by(keys.clone())
                    .order_by(order.clone())
                    .build()?;
                let before = names(&df);
                df = df.with_column("__rn", rn)?;
                let mut keep = col("__rn").eq(lit(1u64));
                for k in keys {
                    keep = keep.or(k.is_null());
                }
                df = df.filter(keep)?;
                df = df.select(before.iter().map(|n| col(n)).collect::<Vec<_>>())?;
                sort = Some(order);
            }
            Command::Unnest { field, into } => {
                let e = c.expr(&df, field)?;
                let f = c.ctx.udf("json_array")?;
                df = df.with_column(into, f.call(vec![e]))?;
                df = df.unnest_columns(&[into.as_str()])?;
                c.json_aliases.insert(into.clone());
                push_unique(&mut shown, into.clone());
            }
        }
    }
    // Default order: newest first (when there is a timestamp to order by).
    if sort.is_none() && !c.aggregated && names(&df).iter().any(|n| n == "@timestamp") {
        sort = Some(vec![col("@timestamp").sort(false, false)]);
    }
    df = apply_sort(df, sort)?;
    let cap = user_limit.map_or(limit, |u| u.min(limit));
    df = df.limit(0, Some(cap))?;
    let mut columns = match display {
        Some(d) => d,
        None if !shown.is_empty() => shown,
        None => vec!["@timestamp".into(), "@message".into()],
    };
    let available = names(&df);
    columns.retain(|c| available.contains(c));
    if !c.aggregated
        && available.iter().any(|n| n == "@ptr")
        && !columns.iter().any(|c| c == "@ptr")
    {
        columns.push("@ptr".into());
    }
    let frame = df.select(columns.iter().map(|n| col(n)).collect::<Vec<_>>())?;
    Ok(Compiled {
        frame,
        columns,
        aggregated: c.aggregated,
    })
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

fn apply_sort(df: DataFrame, sort: Option<Vec<SortExpr>>) -> R<DataFrame> {
    Ok(match sort {
        Some(s) if !s.is_empty() => df.sort(s)?,
        _ => df,
    })
}

/// Named groups of a regex, in order.
fn regex_names(re: &str) -> Vec<String> {
    regex::Regex::new(re)
        .map(|r| r.capture_names().flatten().map(String::from).collect())
        .unwrap_or_default()
}

/// Turn a glob (`user=*, method:*`) into a regex with one group per `*`.
pub fn glob_regex(glob: &str) -> String {
    let parts: Vec<&str> = glob.split('*').collect();
    let mut re = String::new();
    for (i, p) in parts.iter().enumerate() {
        re.push_str(&regex::escape(p));
        if i + 1 < parts.len() {
            // The last wildcard at the very end takes the rest of the value.
            if i + 2 == parts.len() && parts[i + 1].is_empty() {
                re.push_str("(.*)");
            } else {
                re.push_str("(.*?)");
            }
        }
    }
    re
}

fn interval_ms(ms: i64) -> Expr {
    lit(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano {
            months: 0,
            days: 0,
            nanoseconds: ms.saturating_mul(1_000_000),
        },
    )))
}

impl Compiler<'_> {
    fn call(&self, name: &str, args: Vec<Expr>) -> R<Expr> {
        if let Ok(f) = self.ctx.udf(name) {
            return Ok(f.call(args));
        }
        bad(format!("function {name} is not available"))
    }

    fn is_json(&self, name: &str) -> bool {
        JSON_ROOTS.contains(&name) || self.json_aliases.contains(name)
    }

    fn json_get(&self, root: &str, rest: &str) -> R<Expr> {
        self.call("json_get", vec![col(root), lit(rest.to_string())])
    }

    /// Resolve a field name to an expression over `df`.
    fn field(&self, df: &DataFrame, name: &str) -> R<Expr> {
        let cols = names(df);
        let has = |n: &str| cols.iter().any(|c| c == n);
        if has(name) {
            return Ok(col(name));
        }
        match name {
            "timestamp" if has("@timestamp") => return Ok(col("@timestamp")),
            "@ingestionTime" if has("@timestamp") => return Ok(col("@timestamp")),
            _ => {}
        }
        // The nearest JSON-valued column that prefixes the path.
        let mut best: Option<&String> = None;
        for c in &cols {
            if name.len() > c.len()
                && name.starts_with(c.as_str())
                && name.as_bytes()[c.len()] == b'.'
                && self.is_json(c)
                && best.is_none_or(|b| c.len() > b.len())
            {
                best = Some(c);
            }
        }
        if let Some(root) = best {
            return self.json_get(root, &name[root.len() + 1..]);
        }
        if !name.contains('.') && !name.starts_with('@') {
            let suffix = format!(".{name}");
            let in_frame: Vec<&String> = cols.iter().filter(|c| c.ends_with(&suffix)).collect();
            if in_frame.len() == 1 {
                return Ok(col(in_frame[0]));
            }
            if in_frame.len() > 1 {
                return bad(format!(
                    "field {name} is ambiguous: it could be {}",
                    in_frame
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let found: Vec<&String> = self
                .discovered
                .iter()
                .filter(|p| p.ends_with(&suffix))
                .collect();
            if found.len() == 1 {
                return self.field(df, found[0]);
            }
            if found.len() > 1 {
                return bad(format!(
                    "field {name} is ambiguous: it could be {}",
                    found
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if has("@message") {
            return self.json_get("@message", name);
        }
        if self.aggregated {
            return bad(format!(
                "field {name} is not available after stats (available: {})",
                cols.join(", ")
            ));
        }
        Ok(lit(ScalarValue::Utf8(None)))
    }

    fn project(&mut self, df: DataFrame, p: &Proj) -> R<DataFrame> {
        let name = p.name();
        if let ast::Expr::Field(f) = &p.expr {
            if f == &name && names(&df).contains(&name) {
                return Ok(df);
            }
        }
        let e = self.expr(&df, &p.expr)?;
        if let ast::Expr::Call(f, args) = &p.expr {
            if f == "jsonparse" {
                self.json_aliases.insert(name.clone());
                let _ = args;
            }
        }
        if let ast::Expr::Field(f) = &p.expr {
            if self.is_json(f) {
                self.json_aliases.insert(name.clone());
            }
        }
        Ok(df.with_column(&name, e)?)
    }

    fn ty(&self, df: &DataFrame, e: &Expr) -> DataType {
        e.get_type(df.schema()).unwrap_or(DataType::Null)
    }

    /// A numeric view of an expression (JSON text → Float64).
    fn num(&self, df: &DataFrame, e: Expr) -> Expr {
        match self.ty(df, &e) {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                try_cast(e, DataType::Float64)
            }
            DataType::Boolean => cast(e, DataType::Int64),
            _ => e,
        }
    }

    fn is_text(&self, df: &DataFrame, e: &Expr) -> bool {
        matches!(
            self.ty(df, e),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    }

    fn period_of(&self, e: &ast::Expr) -> R<Period> {
        match e {
            ast::Expr::Period(p) => Ok(*p),
            _ => bad("expected a time period such as 5m or 1h"),
        }
    }

    fn floor_ts(&self, ts: Expr, p: Period) -> R<Expr> {
        match p {
            Period::Millis(ms) if ms > 0 => self.call("date_bin", vec![interval_ms(ms), ts]),
            Period::Months(1) => self.call("date_trunc", vec![lit("month"), ts]),
            Period::Months(3) => self.call("date_trunc", vec![lit("quarter"), ts]),
            Period::Months(12) => self.call("date_trunc", vec![lit("year"), ts]),
            _ => bad("periods of months must be 1mo, 1q or 1y"),
        }
    }

    fn expr(&self, df: &DataFrame, e: &ast::Expr) -> R<Expr> {
        use ast::Expr as A;
        Ok(match e {
            A::Field(f) => self.field(df, f)?,
            A::Str(s) => lit(s.clone()),
            A::Int(i) => lit(*i),
            A::Float(f) => lit(*f),
            A::Period(Period::Millis(ms)) => lit(*ms),
            A::Period(Period::Months(_)) => {
                return bad("a calendar period is only valid in bin(), datefloor() and dateceil()")
            }
            A::Regex(_) => return bad("a /regex/ is only valid after like, =~ or in parse"),
            A::Star => return bad("'*' is only valid in count(*)"),
            A::Not(x) => self.expr(df, x)?.not(),
            A::Neg(x) => {
                let v = self.expr(df, x)?;
                Expr::Negative(Box::new(self.num(df, v)))
            }
            A::Binary(l, op, r) => self.binary(df, l, *op, r)?,
            A::In(x, items, negated) => {
                let v = self.expr(df, x)?;
                let list = items
                    .iter()
                    .map(|i| self.expr(df, i))
                    .collect::<R<Vec<_>>>()?;
                let all_numbers = items.iter().all(|i| matches!(i, A::Int(_) | A::Float(_)));
                let v = if all_numbers {
                    self.num(df, v)
                } else if self.is_text(df, &v) {
                    v
                } else {
                    cast(v, DataType::Utf8)
                };
                let list = if all_numbers {
                    list
                } else {
                    list.into_iter().map(|e| cast(e, DataType::Utf8)).collect()
                };
                in_list(v, list, *negated)
            }
            A::Like(x, pat, negated) => {
                let v = self.expr(df, x)?;
                let v = if self.is_text(df, &v) {
                    v
                } else {
                    cast(v, DataType::Utf8)
                };
                let m = match pat.as_ref() {
                    A::Regex(re) => binary_expr(v, Operator::RegexMatch, lit(re.clone())),
                    A::Str(s) => {
                        // A quoted pattern is a substring match.
                        let esc = s
                            .replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_");
                        v.like(lit(format!("%{esc}%")))
                    }
                    _ => return bad("expected a string or /regex/ after like"),
                };
                if *negated {
                    m.not()
                } else {
                    m
                }
            }
            A::Call(name, args) => self.function(df, name, args)?,
        })
    }

    fn binary(&self, df: &DataFrame, l: &ast::Expr, op: BinOp, r: &ast::Expr) -> R<Expr> {
        let a = self.expr(df, l)?;
        let b = self.expr(df, r)?;
        let numeric_lit = |e: &ast::Expr| {
            matches!(
                e,
                ast::Expr::Int(_) | ast::Expr::Float(_) | ast::Expr::Period(_)
            )
        };
        Ok(match op {
            BinOp::And => a.and(b),
            BinOp::Or => a.or(b),
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                let (a, b) = if numeric_lit(r) {
                    (self.num(df, a), b)
                } else if numeric_lit(l) {
                    (a, self.num(df, b))
                } else {
                    (a, b)
                };
                let o = match op {
                    BinOp::Eq => Operator::Eq,
                    BinOp::NotEq => Operator::NotEq,
                    BinOp::Lt => Operator::Lt,
                    BinOp::LtEq => Operator::LtEq,
                    BinOp::Gt => Operator::Gt,
                    _ => Operator::GtEq,
                };
                binary_expr(a, o, b)
            }
            BinOp::Pow => self.call(
                "power",
                vec![
                    cast(self.num(df, a), DataType::Float64),
                    cast(self.num(df, b), DataType::Float64),
                ],
            )?,
            _ => {
                let o = match op {
                    BinOp::Add => Operator::Plus,
                    BinOp::Sub => Operator::Minus,
                    BinOp::Mul => Operator::Multiply,
                    BinOp::Div => Operator::Divide,
                    _ => Operator::Modulo,
                };
                let (a, b) = (self.num(df, a), self.num(df, b));
                // Insights divides as decimals.
                if o == Operator::Divide {
                    binary_expr(cast(a, DataType::Float64), o, cast(b, DataType::Float64))
                } else {
                    binary_expr(a, o, b)
                }
            }
        })
    }

    fn args(&self, df: &DataFrame, args: &[ast::Expr]) -> R<Vec<Expr>> {
        args.iter().map(|a| self.expr(df, a)).collect()
    }

    fn arity(name: &str, args: &[ast::Expr], min: usize, max: usize) -> R<()> {
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return bad(format!(
                "{name}() takes {want} argument(s), got {}",
                args.len()
            ));
        }
        Ok(())
    }

    fn function(&self, df: &DataFrame, name: &str, args: &[ast::Expr]) -> R<Expr> {
        let text = |e: Expr| -> Expr {
            if self.is_text(df, &e) {
                e
            } else {
                cast(e, DataType::Utf8)
            }
        };
        Ok(match name {
            "abs" | "ceil" | "floor" | "sqrt" | "ln" | "log" => {
                Self::arity(name, args, 1, 1)?;
                let a = self.args(df, args)?.remove(0);
                let f = if name == "log" { "ln" } else { name };
                let a = self.num(df, a);
                let a = if f == "abs" {
                    a
                } else {
                    cast(a, DataType::Float64)
                };
                self.call(f, vec![a])?
            }
            "greatest" | "least" => {
                Self::arity(name, args, 1, 100)?;
                let a = self
                    .args(df, args)?
                    .into_iter()
                    .map(|e| self.num(df, e))
                    .collect();
                self.call(name, a)?
            }
            "ispresent" => {
                Self::arity(name, args, 1, 1)?;
                self.args(df, args)?.remove(0).is_not_null()
            }
            "coalesce" => {
                Self::arity(name, args, 1, 100)?;
                self.call("coalesce", self.args(df, args)?)?
            }
            "isempty" => {
                Self::arity(name, args, 1, 1)?;
                let a = text(self.args(df, args)?.remove(0));
                a.clone().is_null().or(a.eq(lit("")))
            }
            "isblank" => {
                Self::arity(name, args, 1, 1)?;
                let a = text(self.args(df, args)?.remove(0));
                a.clone()
                    .is_null()
                    .or(self.call("btrim", vec![a])?.eq(lit("")))
            }
            "concat" => {
                Self::arity(name, args, 1, 100)?;
                let a = self.args(df, args)?.into_iter().map(text).collect();
                self.call("concat", a)?
            }
            "ltrim" | "rtrim" | "trim" => {
                Self::arity(name, args, 1, 2)?;
                let a = self.args(df, args)?.into_iter().map(text).collect();
                self.call(if name == "trim" { "btrim" } else { name }, a)?
            }
            "strlen" => {
                Self::arity(name, args, 1, 1)?;
                let a = text(self.args(df, args)?.remove(0));
                self.call("character_length", vec![a])?
            }
            "toupper" | "tolower" => {
                Self::arity(name, args, 1, 1)?;
                let a = text(self.args(df, args)?.remove(0));
                self.call(if name == "toupper" { "upper" } else { "lower" }, vec![a])?
            }
            "substr" => {
                Self::arity(name, args, 2, 3)?;
                let mut a = self.args(df, args)?;
                let s = text(a.remove(0));
                // Insights counts from 0, SQL from 1.
                let start = cast(self.num(df, a.remove(0)), DataType::Int64) + lit(1i64);
                let mut v = vec![s, start];
                if let Some(len) = a.pop() {
                    v.push(cast(self.num(df, len), DataType::Int64));
                }
                self.call("substr", v)?
            }
            "replace" => {
                Self::arity(name, args, 3, 3)?;
                let a = self.args(df, args)?.into_iter().map(text).collect();
                self.call("replace", a)?
            }
            "strcontains" => {
                Self::arity(name, args, 2, 2)?;
                let mut a = self.args(df, args)?.into_iter().map(text);
                let (s, sub) = (a.next(), a.next());
                let (Some(s), Some(sub)) = (s, sub) else {
                    return bad("strcontains() takes 2 arguments");
                };
                when(self.call("strpos", vec![s, sub])?.gt(lit(0i64)), lit(1i64))
                    .otherwise(lit(0i64))?
            }
            "bin" => {
                Self::arity(name, args, 1, 1)?;
                let p = self.period_of(&args[0])?;
                self.floor_ts(self.field(df, "@timestamp")?, p)?
            }
            "datefloor" | "dateceil" => {
                Self::arity(name, args, 2, 2)?;
                let ts = self.expr(df, &args[0])?;
                let p = self.period_of(&args[1])?;
                let floor = self.floor_ts(ts.clone(), p)?;
                if name == "datefloor" {
                    floor
                } else {
                    let step = match p {
                        Period::Millis(ms) => interval_ms(ms),
                        Period::Months(m) => lit(ScalarValue::IntervalMonthDayNano(Some(
                            IntervalMonthDayNano {
                                months: i32::try_from(m).unwrap_or(1),
                                days: 0,
                                nanoseconds: 0,
                            },
                        ))),
                    };
                    when(floor.clone().eq(ts), floor.clone()).otherwise(floor + step)?
                }
            }
            "frommillis" => {
                Self::arity(name, args, 1, 1)?;
                let a = self.args(df, args)?.remove(0);
                let a = cast(self.num(df, a), DataType::Int64);
                self.call("to_timestamp_millis", vec![a])?
            }
            "tomillis" => {
                Self::arity(name, args, 1, 1)?;
                let a = self.args(df, args)?.remove(0);
                cast(a, DataType::Int64)
            }
            "jsonparse" => {
                Self::arity(name, args, 1, 1)?;
                text(self.args(df, args)?.remove(0))
            }
            "if" => {
                Self::arity(name, args, 3, 3)?;
                let mut a = self.args(df, args)?;
                let (c, t, f) = (a.remove(0), a.remove(0), a.remove(0));
                when(c, t).otherwise(f)?
            }
            "count" | "count_distinct" | "sum" | "avg" | "min" | "max" | "pct" | "percentile"
            | "stddev" | "earliest" | "latest" | "sortsfirst" | "sortslast" => {
                return bad(format!("{name}() is an aggregate: use it in stats"))
            }
            _ => return bad(format!("unknown function {name}()")),
        })
    }

    pub(crate) fn is_aggregate(name: &str) -> bool {
        matches!(
            name,
            "count"
                | "count_distinct"
                | "sum"
                | "avg"
                | "min"
                | "max"
                | "pct"
                | "percentile"
                | "stddev"
                | "earliest"
                | "latest"
                | "sortsfirst"
                | "sortslast"
        )
    }

    fn aggregate(&self, df: &DataFrame, name: &str, args: &[ast::Expr]) -> R<Expr> {
        let one = |what: &str| -> R<Expr> {
            if args.len() != 1 {
                return bad(format!("{what}() takes 1 argument, got {}", args.len()));
            }
            self.expr(df, &args[0])
        };
        let is_json =
            |e: &Expr| matches!(e, Expr::ScalarFunction(f) if f.func.name() == "json_get");
        Ok(match name {
            "count" => match args {
                [] | [ast::Expr::Star] => agg::count(lit(1i64)),
                [a] => agg::count(self.expr(df, a)?),
                _ => return bad("count() takes at most 1 argument"),
            },
            "count_distinct" => agg::count_distinct(one(name)?),
            "sum" => agg::sum(self.num(df, one(name)?)),
            "avg" => agg::avg(self.num(df, one(name)?)),
            "stddev" => agg::stddev(cast(self.num(df, one(name)?), DataType::Float64)),
            "min" | "max" | "sortsfirst" | "sortslast" => {
                let e = one(name)?;
                let e = if is_json(&e) { self.num(df, e) } else { e };
                if name == "min" || name == "sortsfirst" {
                    agg::min(e)
                } else {
                    agg::max(e)
                }
            }
            "pct" | "percentile" => {
                if args.len() != 2 {
                    return bad(format!("{name}() takes 2 arguments (field, percentile)"));
                }
                let e = cast(self.num(df, self.expr(df, &args[0])?), DataType::Float64);
                let p = match &args[1] {
                    ast::Expr::Int(i) => *i as f64,
                    ast::Expr::Float(f) => *f,
                    _ => return bad("the percentile must be a number from 0 to 100"),
                };
                if !(0.0..=100.0).contains(&p) {
                    return bad("the percentile must be a number from 0 to 100");
                }
                crate::udf::exact_percentile(p / 100.0).call(vec![e])
            }
            "earliest" | "latest" => {
                let e = one(name)?;
                let ts = self.field(df, "@timestamp")?;
                if name == "earliest" {
                    agg::first_value(e, vec![ts.sort(true, false)])
                } else {
                    agg::last_value(e, vec![ts.sort(true, false)])
                }
            }
            _ => return bad(format!("unknown aggregate {name}()")),
        })
    }

    /// Replace aggregate calls in a stats expression by references to computed aggregates.
    fn split_aggregates(
        &self,
        df: &DataFrame,
        e: &ast::Expr,
        aggs: &mut Vec<Expr>,
        earlier: &HashMap<String, ast::Expr>,
    ) -> R<ast::Expr> {
        use ast::Expr as A;
        Ok(match e {
            A::Call(name, args) if Self::is_aggregate(name) => {
                let a = self.aggregate(df, name, args)?;
                let id = format!("__agg{}", aggs.len());
                aggs.push(a.alias(&id));
                A::Field(id)
            }
            A::Field(f) if earlier.contains_key(f) => earlier[f].clone(),
            A::Not(x) => A::Not(Box::new(self.split_aggregates(df, x, aggs, earlier)?)),
            A::Neg(x) => A::Neg(Box::new(self.split_aggregates(df, x, aggs, earlier)?)),
            A::Binary(l, op, r) => A::Binary(
                Box::new(self.split_aggregates(df, l, aggs, earlier)?),
                *op,
                Box::new(self.split_aggregates(df, r, aggs, earlier)?),
            ),
            A::Call(name, args) => A::Call(
                name.clone(),
                args.iter()
                    .map(|a| self.split_aggregates(df, a, aggs, earlier))
                    .collect::<R<Vec<_>>>()?,
            ),
            A::Field(f) => {
                return bad(format!(
                    "{f} in stats must be inside an aggregate function (count, sum, avg, ...)"
                ))
            }
            other => other.clone(),
        })
    }

    /// The aggregates of the partial table ([`crate::from_rollups`]) that stand for those
    /// [`Compiler::split_aggregates`] makes of `e`, in its order: each sums the column that
    /// holds the aggregate's part.
    fn partial_aggregates(e: &ast::Expr, out: &mut Vec<Expr>) -> R<()> {
        use ast::Expr as A;
        match e {
            A::Call(name, args) if Self::is_aggregate(name) => {
                let id = format!("__agg{}", out.len());
                let Some(part) = crate::from_rollups::partial_column(name, args) else {
                    return bad(format!("{name}() of these arguments is not in a rollup"));
                };
                out.push(agg::sum(col(part)).alias(id));
            }
            A::Not(x) | A::Neg(x) => Self::partial_aggregates(x, out)?,
            A::Binary(l, _, r) => {
                Self::partial_aggregates(l, out)?;
                Self::partial_aggregates(r, out)?;
            }
            A::Call(_, args) => {
                for a in args {
                    Self::partial_aggregates(a, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn stats(
        &mut self,
        df: DataFrame,
        aggs: &[Proj],
        by: &[Proj],
        partials: Option<DataFrame>,
    ) -> R<(DataFrame, Vec<String>)> {
        let mut group_exprs = Vec::new();
        let mut out = Vec::new();
        for g in by {
            let e = self.expr(&df, &g.expr)?;
            group_exprs.push(e.alias(g.name()));
            push_unique(&mut out, g.name());
        }
        let mut agg_exprs = Vec::new();
        let mut finals: Vec<(String, ast::Expr)> = Vec::new();
        let mut earlier: HashMap<String, ast::Expr> = HashMap::new();
        for a in aggs {
            let rewritten = self.split_aggregates(&df, &a.expr, &mut agg_exprs, &earlier)?;
            if agg_exprs.is_empty() {
                return bad(format!("{} in stats needs an aggregate function", a.text));
            }
            earlier.insert(a.name(), rewritten.clone());
            finals.push((a.name(), rewritten));
        }
        let n_aggs = agg_exprs.len();
        let mut df = df.aggregate(group_exprs, agg_exprs)?;
        if let Some(p) = partials {
            // The same aggregates over the rollups' rows, in the scan's types, added to the
            // scan's where their groups meet.
            let mut keys = Vec::new();
            for g in by {
                keys.push(self.expr(&p, &g.expr)?.alias(g.name()));
            }
            let mut parts = Vec::new();
            for a in aggs {
                Self::partial_aggregates(&a.expr, &mut parts)?;
            }
            if parts.len() != n_aggs {
                return bad("the rollups' aggregates do not match the query's");
            }
            let p = p.aggregate(keys, parts)?;
            let typed = df
                .schema()
                .fields()
                .iter()
                .map(|f| cast(col(f.name()), f.data_type().clone()).alias(f.name()))
                .collect::<Vec<_>>();
            let p = p.select(typed)?;
            let sums = (0..n_aggs)
                .map(|k| {
                    let id = format!("__agg{k}");
                    agg::sum(col(&id)).alias(id)
                })
                .collect::<Vec<_>>();
            let keys = out.iter().map(|n| col(n)).collect::<Vec<_>>();
            df = df.union(p)?.aggregate(keys, sums)?;
        }
        self.aggregated = true;
        let mut select: Vec<Expr> = out.iter().map(|n| col(n)).collect();
        for (name, e) in &finals {
            let e = self.expr(&df, e)?;
            select.push(e.alias(name));
            push_unique(&mut out, name.clone());
        }
        df = df.select(select)?;
        Ok((df, out))
    }

    fn parse(
        &mut self,
        df: DataFrame,
        field: Option<&ast::Expr>,
        p: &ParsePattern,
    ) -> R<DataFrame> {
        let src = match field {
            Some(f) => self.expr(&df, f)?,
            None => self.field(&df, "@message")?,
        };
        let src = if self.is_text(&df, &src) {
            src
        } else {
            cast(src, DataType::Utf8)
        };
        let mut df = df;
        match p {
            ParsePattern::Glob(glob, names) => {
                let re = glob_regex(glob);
                for (i, n) in names.iter().enumerate() {
                    let e = self.call(
                        "regex_extract",
                        vec![src.clone(), lit(re.clone()), lit((i + 1).to_string())],
                    )?;
                    df = df.with_column(n, e)?;
                }
            }
            ParsePattern::Regex(re) => {
                for n in regex_names(re) {
                    let e = self.call(
                        "regex_extract",
                        vec![src.clone(), lit(re.clone()), lit(n.clone())],
                    )?;
                    df = df.with_column(&n, e)?;
                }
            }
        }
        Ok(df)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_to_regex() {
        assert_eq!(glob_regex("user=*, method:*"), "user=(.*?), method:(.*)");
        assert_eq!(
            glob_regex("arn:aws:sts::*:assumed-role/*/*"),
            "arn:aws:sts::(.*?):assumed\\-role/(.*?)/(.*)"
        );
        assert_eq!(glob_regex("[*] x"), "\\[(.*?)\\] x");
    }
}
