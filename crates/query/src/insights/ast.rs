//! The syntax tree of a Logs Insights query.

/// A query: commands separated by `|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The commands, in order.
    pub commands: Vec<Command>,
}

/// An expression with an optional `as` name, and the source text it came from (used as
/// the column name when there is no alias, as CloudWatch does).
#[derive(Debug, Clone, PartialEq)]
pub struct Proj {
    /// The expression.
    pub expr: Expr,
    /// `as` name.
    pub alias: Option<String>,
    /// The expression's text.
    pub text: String,
}

impl Proj {
    /// The output name: the alias, else the expression's text.
    pub fn name(&self) -> String {
        self.alias.clone().unwrap_or_else(|| self.text.clone())
    }
}

/// A `parse` pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsePattern {
    /// A quoted glob with `*` wildcards and the names they fill, in order.
    Glob(String, Vec<String>),
    /// A regex with named groups `(?<name>...)`.
    Regex(String),
}

/// One command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `fields a, b as c`.
    Fields(Vec<Proj>),
    /// `display a, b` (only the last counts).
    Display(Vec<Proj>),
    /// `filter expr`.
    Filter(Expr),
    /// `stats agg, ... [by group, ...]`.
    Stats {
        /// Aggregates.
        aggs: Vec<Proj>,
        /// Groups.
        by: Vec<Proj>,
    },
    /// `sort key [asc|desc], ...` (`true` = descending).
    Sort(Vec<(Expr, bool)>),
    /// `limit n`.
    Limit(u64),
    /// `parse [field] pattern`.
    Parse {
        /// The field parsed (default `@message`).
        field: Option<Expr>,
        /// The pattern.
        pattern: ParsePattern,
    },
    /// `dedup f, ...`.
    Dedup(Vec<Expr>),
    /// `unnest field into name`.
    Unnest {
        /// The list field.
        field: Expr,
        /// The name of each element.
        into: String,
    },
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `and`
    And,
    /// `or`
    Or,
    /// `=`
    Eq,
    /// `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A field, by its dotted name.
    Field(String),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A decimal literal.
    Float(f64),
    /// A time period (`5m`): milliseconds, or months for calendar units.
    Period(Period),
    /// A `/regex/` literal.
    Regex(String),
    /// `*` (only in `count(*)`).
    Star,
    /// `not e`.
    Not(Box<Expr>),
    /// `-e`.
    Neg(Box<Expr>),
    /// `l op r`.
    Binary(Box<Expr>, BinOp, Box<Expr>),
    /// `e [not] in [a, b]`.
    In(Box<Expr>, Vec<Expr>, bool),
    /// `e [not] like|=~ pattern`.
    Like(Box<Expr>, Box<Expr>, bool),
    /// `f(args)`.
    Call(String, Vec<Expr>),
}

/// A time period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A fixed length in milliseconds.
    Millis(i64),
    /// Calendar months (month = 1, quarter = 3, year = 12).
    Months(i64),
}
