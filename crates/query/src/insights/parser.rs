//! A recursive-descent parser for the Logs Insights language, working on characters so
//! that `/` is a regex literal where a value is expected and division where an operator
//! is. Errors name the line, column and what was expected.

use super::ast::*;

/// A syntax error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// Byte offset.
    pub offset: usize,
    /// What was expected and what was found.
    pub message: String,
}

const COMMANDS: &str = "fields, display, filter, stats, sort, limit, parse, dedup, unnest";

/// Most commands in one query (each is a stage of the plan).
pub const MAX_COMMANDS: usize = 100;
/// Deepest nesting of parentheses, function calls, `not` and unary minus.
pub const MAX_DEPTH: usize = 64;
/// Most operators in one query (each is a node of an expression tree).
pub const MAX_OPERATORS: usize = 1_000;

struct P<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    operators: usize,
}

type R<T> = Result<T, SyntaxError>;

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '@' || c == '.' || c == '$'
}

/// Parse a query.
pub fn parse(src: &str) -> Result<Query, SyntaxError> {
    let mut p = P {
        src,
        pos: 0,
        depth: 0,
        operators: 0,
    };
    let mut commands = Vec::new();
    loop {
        p.skip_ws();
        if p.eof() {
            if commands.is_empty() {
                return Err(p.err(format!(
                    "expected a command ({COMMANDS}), found the end of the query"
                )));
            }
            break;
        }
        if commands.len() == MAX_COMMANDS {
            return Err(p.err(format!(
                "the query has more than {MAX_COMMANDS} commands; split it or simplify it"
            )));
        }
        commands.push(p.command()?);
        p.skip_ws();
        if p.eof() {
            break;
        }
        if !p.eat("|") {
            return Err(p.err(format!(
                "expected '|' or the end of the query, found {}",
                p.found()
            )));
        }
    }
    Ok(Query { commands })
}

impl<'a> P<'a> {
    /// One level deeper into the expression; refused past [`MAX_DEPTH`].
    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!(
                "the expression nests deeper than {MAX_DEPTH} levels (parentheses, function calls, 'not', '-'); simplify it"
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// One more operator node; refused past [`MAX_OPERATORS`].
    fn operator(&mut self) -> R<()> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(self.err(format!(
                "the query has more than {MAX_OPERATORS} operators; simplify it"
            )));
        }
        Ok(())
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn err_at(&self, offset: usize, message: String) -> SyntaxError {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SyntaxError {
            line,
            column,
            offset,
            message,
        }
    }

    fn err(&self, message: String) -> SyntaxError {
        self.err_at(self.pos, message)
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the query".into(),
            Some(_) => {
                let t: String = self
                    .rest()
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(20)
                    .collect();
                format!("'{t}'")
            }
        }
    }

    /// Skip whitespace and `#` comments (to the end of the line).
    fn skip_ws(&mut self) {
        loop {
            let Some(c) = self.peek() else { return };
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else if c == '#' {
                match self.rest().find('\n') {
                    Some(n) => self.pos += n,
                    None => self.pos = self.src.len(),
                }
            } else {
                return;
            }
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// The next bare word (without consuming it).
    fn peek_word(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(r.len(), |(i, _)| i);
        (n > 0).then(|| &r[..n])
    }

    /// Consume a keyword (case-insensitive, whole word).
    fn keyword(&mut self, kw: &str) -> bool {
        match self.peek_word() {
            Some(w) if w.eq_ignore_ascii_case(kw) => {
                // A field like `by.x` is not the keyword `by`.
                let after = self.rest()[w.len()..].chars().next();
                if after.is_some_and(|c| c == '.' || c == '@') {
                    return false;
                }
                self.pos += w.len();
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, s: &str, what: &str) -> R<()> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {}", self.found())))
        }
    }

    fn command(&mut self) -> R<Command> {
        self.skip_ws();
        let start = self.pos;
        let Some(word) = self.peek_word() else {
            return Err(self.err(format!(
                "expected a command ({COMMANDS}), found {}",
                self.found()
            )));
        };
        self.pos += word.len();
        match word.to_ascii_lowercase().as_str() {
            "fields" => Ok(Command::Fields(self.projections(false)?)),
            "display" => Ok(Command::Display(self.projections(false)?)),
            "filter" => Ok(Command::Filter(self.expr()?)),
            "stats" => {
                let aggs = self.projections(true)?;
                let by = if self.keyword("by") {
                    self.projections(false)?
                } else {
                    Vec::new()
                };
                Ok(Command::Stats { aggs, by })
            }
            "sort" => {
                let mut keys = Vec::new();
                loop {
                    let e = self.expr()?;
                    // Descending unless `asc` (as moto does; AWS names no default).
                    let desc = self.keyword("desc") || !self.keyword("asc");
                    keys.push((e, desc));
                    if !self.eat(",") {
                        break;
                    }
                }
                Ok(Command::Sort(keys))
            }
            "limit" | "head" => {
                self.skip_ws();
                let s = self.pos;
                let n: String = self
                    .rest()
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                self.pos += n.len();
                n.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Command::Limit)
                    .ok_or_else(|| {
                        self.err_at(s, "expected a positive whole number after 'limit'".into())
                    })
            }
            "parse" => self.parse_command(),
            "dedup" => {
                let mut fields = vec![self.field_expr()?];
                while self.eat(",") {
                    fields.push(self.field_expr()?);
                }
                Ok(Command::Dedup(fields))
            }
            "unnest" => {
                let field = self.field_expr()?;
                if !self.keyword("into") {
                    return Err(self.err(format!(
                        "expected 'into' after the unnest field, found {}",
                        self.found()
                    )));
                }
                let into = self.name()?;
                Ok(Command::Unnest { field, into })
            }
            "pattern" | "diff" | "anomaly" | "unmask" | "filterindex" | "source" | "lookup"
            | "join" | "addtotals" => Err(self.err_at(
                start,
                format!("the '{word}' command is not supported by Logbook (supported: {COMMANDS})"),
            )),
            _ => Err(self.err_at(
                start,
                format!("expected a command ({COMMANDS}), found '{word}'"),
            )),
        }
    }

    fn parse_command(&mut self) -> R<Command> {
        self.skip_ws();
        let field = match self.peek() {
            Some('"') | Some('\'') | Some('/') => None,
            _ => Some(self.field_expr()?),
        };
        self.skip_ws();
        match self.peek() {
            Some('/') => {
                let re = self.regex()?;
                if !re.contains("(?<") && !re.contains("(?P<") {
                    return Err(self
                        .err("expected named groups like (?<name>...) in the parse regex".into()));
                }
                Ok(Command::Parse {
                    field,
                    pattern: ParsePattern::Regex(re),
                })
            }
            Some('"') | Some('\'') => {
                let s0 = self.pos;
                let glob = self.string()?;
                if !self.keyword("as") {
                    return Err(self.err(format!(
                        "expected 'as' and field names after the parse pattern, found {}",
                        self.found()
                    )));
                }
                let mut names = vec![self.name()?];
                while self.eat(",") {
                    names.push(self.name()?);
                }
                let stars = glob.matches('*').count();
                if stars != names.len() {
                    return Err(self.err_at(
                        s0,
                        format!(
                            "the parse pattern has {stars} '*' but {} names follow 'as'",
                            names.len()
                        ),
                    ));
                }
                Ok(Command::Parse {
                    field,
                    pattern: ParsePattern::Glob(glob, names),
                })
            }
            _ => Err(self.err(format!(
                "expected a quoted pattern or a /regex/ after 'parse', found {}",
                self.found()
            ))),
        }
    }

    fn projections(&mut self, _aggregates: bool) -> R<Vec<Proj>> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            let s = self.pos;
            let expr = self.expr()?;
            let text = self.src[s..self.pos].trim().to_string();
            let alias = if self.keyword("as") {
                Some(self.name()?)
            } else {
                None
            };
            out.push(Proj { expr, alias, text });
            if !self.eat(",") {
                break;
            }
        }
        Ok(out)
    }

    /// A field name (bare path or backticks).
    fn name(&mut self) -> R<String> {
        self.skip_ws();
        match self.peek() {
            Some('`') => self.backtick(),
            Some(c) if is_field_char(c) && c != '.' => {
                let n: String = self
                    .rest()
                    .chars()
                    .take_while(|c| is_field_char(*c))
                    .collect();
                self.pos += n.len();
                Ok(n)
            }
            _ => Err(self.err(format!("expected a field name, found {}", self.found()))),
        }
    }

    fn field_expr(&mut self) -> R<Expr> {
        Ok(Expr::Field(self.field_path()?))
    }

    /// A dotted path whose segments may be in backticks.
    fn field_path(&mut self) -> R<String> {
        self.skip_ws();
        let mut out = String::new();
        loop {
            match self.peek() {
                Some('`') => out.push_str(&self.backtick()?),
                Some(c) if is_field_char(c) => {
                    let n: String = self
                        .rest()
                        .chars()
                        .take_while(|c| is_field_char(*c))
                        .collect();
                    self.pos += n.len();
                    out.push_str(&n);
                }
                _ => break,
            }
        }
        if out.is_empty() {
            return Err(self.err(format!("expected a field name, found {}", self.found())));
        }
        Ok(out)
    }

    fn backtick(&mut self) -> R<String> {
        let s = self.pos;
        self.pos += 1;
        match self.rest().find('`') {
            Some(n) => {
                let v = self.rest()[..n].to_string();
                self.pos += n + 1;
                Ok(v)
            }
            None => Err(self.err_at(s, "unterminated `backtick` name".into())),
        }
    }

    fn string(&mut self) -> R<String> {
        self.skip_ws();
        let s = self.pos;
        let Some(q) = self.peek() else {
            return Err(self.err("expected a string".into()));
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, n)) = chars.next() {
                    match n {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        _ => out.push(n),
                    }
                }
            } else if c == q {
                self.pos += i + 1;
                return Ok(out);
            } else {
                out.push(c);
            }
        }
        Err(self.err_at(s, "unterminated string".into()))
    }

    fn regex(&mut self) -> R<String> {
        self.skip_ws();
        let s = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, n)) = chars.next() {
                    if n != '/' {
                        out.push('\\');
                    }
                    out.push(n);
                }
            } else if c == '/' {
                self.pos += i + 1;
                if let Err(e) = regex::Regex::new(&out) {
                    return Err(self.err_at(s, format!("invalid regex: {e}")));
                }
                return Ok(out);
            } else {
                out.push(c);
            }
        }
        Err(self.err_at(s, "unterminated /regex/".into()))
    }

    // Expressions, loosest first.
    fn expr(&mut self) -> R<Expr> {
        self.enter()?;
        let mut l = self.and()?;
        while self.keyword("or") {
            self.operator()?;
            let r = self.and()?;
            l = Expr::Binary(Box::new(l), BinOp::Or, Box::new(r));
        }
        self.leave();
        Ok(l)
    }

    fn and(&mut self) -> R<Expr> {
        let mut l = self.not()?;
        while self.keyword("and") {
            self.operator()?;
            let r = self.not()?;
            l = Expr::Binary(Box::new(l), BinOp::And, Box::new(r));
        }
        Ok(l)
    }

    fn not(&mut self) -> R<Expr> {
        if self.keyword("not") {
            self.enter()?;
            self.operator()?;
            let e = Expr::Not(Box::new(self.not()?));
            self.leave();
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> R<Expr> {
        let l = self.additive()?;
        self.skip_ws();
        let negated = {
            let save = self.pos;
            if self.keyword("not") {
                if self
                    .peek_word()
                    .is_some_and(|w| w.eq_ignore_ascii_case("in") || w.eq_ignore_ascii_case("like"))
                {
                    true
                } else {
                    self.pos = save;
                    false
                }
            } else {
                false
            }
        };
        if self.keyword("in") {
            self.expect("[", "'[' after 'in'")?;
            let mut items = Vec::new();
            if !self.eat("]") {
                loop {
                    items.push(self.additive()?);
                    if self.eat("]") {
                        break;
                    }
                    self.expect(",", "',' or ']' in the list")?;
                }
            }
            return Ok(Expr::In(Box::new(l), items, negated));
        }
        if self.keyword("like") || (!negated && self.eat("=~")) {
            self.skip_ws();
            let pat = match self.peek() {
                Some('/') => Expr::Regex(self.regex()?),
                Some('"') | Some('\'') => Expr::Str(self.string()?),
                _ => {
                    return Err(self.err(format!(
                        "expected a quoted string or a /regex/ after 'like', found {}",
                        self.found()
                    )))
                }
            };
            return Ok(Expr::Like(Box::new(l), Box::new(pat), negated));
        }
        if negated {
            return Err(self.err(format!(
                "expected 'in' or 'like' after 'not', found {}",
                self.found()
            )));
        }
        for (s, op) in [
            ("!=", BinOp::NotEq),
            ("<=", BinOp::LtEq),
            (">=", BinOp::GtEq),
            ("==", BinOp::Eq),
            ("=", BinOp::Eq),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ] {
            if self.rest().starts_with("=~") {
                break;
            }
            if self.eat(s) {
                self.operator()?;
                let r = self.additive()?;
                return Ok(Expr::Binary(Box::new(l), op, Box::new(r)));
            }
        }
        Ok(l)
    }

    fn additive(&mut self) -> R<Expr> {
        let mut l = self.multiplicative()?;
        loop {
            self.skip_ws();
            let op = match self.peek() {
                Some('+') => BinOp::Add,
                Some('-') => BinOp::Sub,
                _ => return Ok(l),
            };
            self.pos += 1;
            self.operator()?;
            let r = self.multiplicative()?;
            l = Expr::Binary(Box::new(l), op, Box::new(r));
        }
    }

    fn multiplicative(&mut self) -> R<Expr> {
        let mut l = self.power()?;
        loop {
            self.skip_ws();
            let op = match self.peek() {
                Some('*') => BinOp::Mul,
                Some('/') => BinOp::Div,
                Some('%') => BinOp::Mod,
                _ => return Ok(l),
            };
            self.pos += 1;
            self.operator()?;
            let r = self.power()?;
            l = Expr::Binary(Box::new(l), op, Box::new(r));
        }
    }

    fn power(&mut self) -> R<Expr> {
        let l = self.unary()?;
        if self.eat("^") {
            self.enter()?;
            self.operator()?;
            let r = self.power()?;
            self.leave();
            return Ok(Expr::Binary(Box::new(l), BinOp::Pow, Box::new(r)));
        }
        Ok(l)
    }

    fn unary(&mut self) -> R<Expr> {
        self.skip_ws();
        if self.peek() == Some('-') {
            self.pos += 1;
            self.enter()?;
            self.operator()?;
            let e = Expr::Neg(Box::new(self.unary()?));
            self.leave();
            return Ok(e);
        }
        self.primary()
    }

    fn number(&mut self) -> R<Expr> {
        let s = self.pos;
        let n: String = self
            .rest()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        self.pos += n.len();
        let unit: String = self
            .rest()
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        if !unit.is_empty() {
            self.pos += unit.len();
            let v: f64 = n
                .parse()
                .map_err(|_| self.err_at(s, format!("invalid number '{n}'")))?;
            return period(v, &unit).map(Expr::Period).ok_or_else(|| {
                self.err_at(
                    s,
                    format!("unknown time unit '{unit}' (expected ms, s, m, h, d, w, mo, q or y)"),
                )
            });
        }
        if n.contains('.') {
            n.parse::<f64>()
                .map(Expr::Float)
                .map_err(|_| self.err_at(s, format!("invalid number '{n}'")))
        } else {
            n.parse::<i64>()
                .map(Expr::Int)
                .map_err(|_| self.err_at(s, format!("invalid number '{n}'")))
        }
    }

    fn primary(&mut self) -> R<Expr> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.err("expected a value, found the end of the query".into())),
            Some('(') => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(")", "')'")?;
                Ok(e)
            }
            Some('"') | Some('\'') => Ok(Expr::Str(self.string()?)),
            Some('/') => Ok(Expr::Regex(self.regex()?)),
            Some('*') => {
                self.pos += 1;
                Ok(Expr::Star)
            }
            Some(c) if c.is_ascii_digit() => self.number(),
            Some(c) if is_field_char(c) || c == '`' => {
                let s = self.pos;
                let path = self.field_path()?;
                self.skip_ws();
                if self.peek() == Some('(') && !path.contains('.') && !path.starts_with('@') {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.expr()?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",", "',' or ')' in the argument list")?;
                        }
                    }
                    return Ok(Expr::Call(path.to_ascii_lowercase(), args));
                }
                if path.eq_ignore_ascii_case("true") || path.eq_ignore_ascii_case("false") {
                    return Ok(Expr::Int(i64::from(path.eq_ignore_ascii_case("true"))));
                }
                let _ = s;
                Ok(Expr::Field(path))
            }
            Some(_) => Err(self.err(format!(
                "expected a field, a literal or a function call, found {}",
                self.found()
            ))),
        }
    }
}

/// A period from a number and a unit (`5m`, `1h`, `2mo`).
pub fn period(v: f64, unit: &str) -> Option<Period> {
    let u = unit.to_ascii_lowercase();
    let u = u
        .strip_suffix('s')
        .filter(|s| !s.is_empty() && *s != "m" && *s != "h" && *s != "d")
        .unwrap_or(&u);
    let ms = |k: f64| Some(Period::Millis((v * k) as i64));
    match u {
        "ms" | "msec" | "millisecond" => ms(1.0),
        "s" | "sec" | "second" => ms(1000.0),
        "m" | "min" | "minute" => ms(60_000.0),
        "h" | "hr" | "hour" => ms(3_600_000.0),
        "d" | "day" => ms(86_400_000.0),
        "w" | "week" => ms(7.0 * 86_400_000.0),
        "mo" | "mon" | "month" => Some(Period::Months(v as i64)),
        "q" | "qtr" | "quarter" => Some(Period::Months(3 * v as i64)),
        "y" | "yr" | "year" => Some(Period::Months(12 * v as i64)),
        _ => None,
    }
}
