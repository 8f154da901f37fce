//! `where` conditions over catalog columns, parsed into an allow-listed form.
//!
//! A condition is what a `WHERE` clause holds, and nothing more: column names, string and
//! number literals, comparisons (`= != <> < <= > >=`), `AND`/`OR`/`NOT`, `IN (literal, …)`,
//! `LIKE 'pattern'`, `BETWEEN a AND b`, `IS [NOT] NULL`, arithmetic (`+ - * / %`) and
//! parentheses. Function calls, subqueries, table references and every other SQL construct are
//! refused before anything is evaluated: polars SQL runs table functions such as
//! `read_csv('/any/file')` inside expressions, so the text a user typed never reaches it.
//! The parsed condition is written back as canonical SQL (quoted identifiers, escaped
//! literals) that only this grammar can produce, and handed to polars from there.

use std::fmt::Write as _;

/// Longest condition accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses and operators while parsing.
const MAX_DEPTH: usize = 64;
/// Deepest the condition may nest once chains of `AND`, `OR`, `+` and `*` are balanced: what
/// reaches the SQL parser and the expression engine behind it, whose recursion is bounded by
/// the thread's stack and whose parsing of nested parentheses costs time exponential in their
/// depth. 16 levels hold chains of thousands of terms and a dozen `NOT`s in a row.
pub const MAX_TREE_DEPTH: usize = 16;
/// Most operands and operators in one condition (IN lists count one per item).
pub const MAX_NODES: usize = 2048;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// A column.
    Column(String),
    /// A string literal.
    Str(String),
    /// A number literal, as written (digits, one dot, an exponent).
    Num(String),
    /// `TRUE` or `FALSE`.
    Bool(bool),
    /// `NULL`.
    Null,
    /// `-x`.
    Neg(Box<Cond>),
    /// `NOT x`.
    Not(Box<Cond>),
    /// `a op b` for comparisons, `AND`, `OR` and arithmetic.
    Binary(Box<Cond>, &'static str, Box<Cond>),
    /// `x [NOT] IN (literals)`.
    In(Box<Cond>, Vec<Cond>, bool),
    /// `x [NOT] LIKE 'pattern'`.
    Like(Box<Cond>, String, bool),
    /// `x [NOT] BETWEEN a AND b`.
    Between(Box<Cond>, Box<Cond>, Box<Cond>, bool),
    /// `x IS [NOT] NULL`.
    IsNull(Box<Cond>, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Num(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

const KEYWORDS: [&str; 10] = [
    "AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "TRUE", "FALSE", "BETWEEN",
];
/// Words that only a query (not a condition) uses: refused with a clear message.
const QUERY_WORDS: [&str; 16] = [
    "SELECT", "FROM", "JOIN", "UNION", "WITH", "EXISTS", "CASE", "CAST", "INTERVAL", "ARRAY",
    "ILIKE", "SIMILAR", "OVER", "VALUES", "TABLE", "LATERAL",
];

fn lex(text: &str) -> Result<Vec<Tok>, FilterError> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if two == "--" || two == "/*" {
            return syntax("comments are not allowed in a condition");
        }
        match c {
            '(' => out.push(Tok::LParen),
            ')' => out.push(Tok::RParen),
            ',' => out.push(Tok::Comma),
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return syntax("a string literal is not closed (missing ')"),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return syntax("a quoted column name is not closed"),
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            s.push('"');
                            i += 2;
                        }
                        Some('"') => break,
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                if s.is_empty() {
                    return syntax("an empty quoted column name");
                }
                out.push(Tok::Quoted(s));
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                let mut dot = false;
                while let Some(&d) = chars.get(i) {
                    if d.is_ascii_digit() {
                        i += 1;
                    } else if d == '.' && !dot {
                        dot = true;
                        i += 1;
                    } else if (d == 'e' || d == 'E')
                        && chars
                            .get(i + 1)
                            .is_some_and(|n| n.is_ascii_digit() || *n == '-' || *n == '+')
                    {
                        i += 2;
                        while chars.get(i).is_some_and(char::is_ascii_digit) {
                            i += 1;
                        }
                        break;
                    } else {
                        break;
                    }
                }
                if chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    return syntax(format!(
                        "{:?} is neither a number nor a column name",
                        chars[start..=i].iter().collect::<String>()
                    ));
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
                continue;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
                continue;
            }
            _ => {
                let op = match two.as_str() {
                    "<=" => Some("<="),
                    ">=" => Some(">="),
                    "<>" | "!=" => Some("!="),
                    "==" => Some("="),
                    _ => None,
                };
                if let Some(op) = op {
                    out.push(Tok::Op(op));
                    i += 2;
                    continue;
                }
                let op = match c {
                    '=' => "=",
                    '<' => "<",
                    '>' => ">",
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    '%' => "%",
                    ';' => return syntax("a condition is one expression: no ';'"),
                    '.' => {
                        return syntax(
                            "table references (`t.column`) are not allowed: name the column",
                        )
                    }
                    other => return syntax(format!("unexpected character {other:?}")),
                };
                out.push(Tok::Op(op));
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(k))
    }

    fn eat_keyword(&mut self, k: &str) -> bool {
        let yes = self.keyword(k);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(&t) {
            self.at += 1;
            Ok(())
        } else {
            syntax(format!("expected {what}{}", self.near()))
        }
    }

    fn near(&self) -> String {
        match self.peek() {
            None => " at the end".into(),
            Some(t) => format!(" near {}", show(t)),
        }
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return syntax(format!(
                "the condition nests deeper than {MAX_DEPTH} levels"
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Cond, FilterError> {
        self.enter()?;
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            let right = self.and()?;
            left = Cond::Binary(Box::new(left), "OR", Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, FilterError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            let right = self.not()?;
            left = Cond::Binary(Box::new(left), "AND", Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Cond, FilterError> {
        if self.eat_keyword("NOT") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Cond, FilterError> {
        let left = self.sum()?;
        if let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            if ["=", "!=", "<", "<=", ">", ">="].contains(&op) {
                self.at += 1;
                let right = self.sum()?;
                return Ok(Cond::Binary(Box::new(left), op, Box::new(right)));
            }
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return syntax(format!("expected NULL after IS{}", self.near()));
            }
            return Ok(Cond::IsNull(Box::new(left), negated));
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            self.expect(Tok::LParen, "( after IN")?;
            if self.keyword("SELECT") {
                return syntax("subqueries are not allowed: IN takes a list of literals");
            }
            let mut items = vec![self.literal()?];
            while self.peek() == Some(&Tok::Comma) {
                self.at += 1;
                items.push(self.literal()?);
            }
            self.expect(Tok::RParen, ") closing the IN list")?;
            return Ok(Cond::In(Box::new(left), items, negated));
        }
        if self.eat_keyword("LIKE") {
            return match self.peek().cloned() {
                Some(Tok::Str(p)) => {
                    self.at += 1;
                    Ok(Cond::Like(Box::new(left), p, negated))
                }
                _ => syntax(format!("LIKE takes a string pattern{}", self.near())),
            };
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.sum()?;
            if !self.eat_keyword("AND") {
                return syntax(format!("expected AND in BETWEEN{}", self.near()));
            }
            let high = self.sum()?;
            return Ok(Cond::Between(
                Box::new(left),
                Box::new(low),
                Box::new(high),
                negated,
            ));
        }
        if negated {
            return syntax(format!(
                "expected IN, LIKE or BETWEEN after NOT{}",
                self.near()
            ));
        }
        Ok(left)
    }

    fn literal(&mut self) -> Result<Cond, FilterError> {
        let negative = matches!(self.peek(), Some(Tok::Op("-")));
        if negative {
            self.at += 1;
        }
        let lit = match self.peek().cloned() {
            Some(Tok::Str(s)) if !negative => Cond::Str(s),
            Some(Tok::Num(n)) => Cond::Num(if negative { format!("-{n}") } else { n }),
            Some(Tok::Ident(w)) if !negative && w.eq_ignore_ascii_case("NULL") => Cond::Null,
            Some(Tok::Ident(w)) if !negative && w.eq_ignore_ascii_case("TRUE") => Cond::Bool(true),
            Some(Tok::Ident(w)) if !negative && w.eq_ignore_ascii_case("FALSE") => {
                Cond::Bool(false)
            }
            _ => return syntax(format!("IN lists hold literals only{}", self.near())),
        };
        self.at += 1;
        Ok(lit)
    }

    fn sum(&mut self) -> Result<Cond, FilterError> {
        let mut left = self.product()?;
        while let Some(Tok::Op(op @ ("+" | "-"))) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.product()?;
            left = Cond::Binary(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Cond, FilterError> {
        let mut left = self.unary()?;
        while let Some(Tok::Op(op @ ("*" | "/" | "%"))) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.unary()?;
            left = Cond::Binary(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Cond, FilterError> {
        if let Some(Tok::Op("-")) = self.peek() {
            self.at += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Cond::Neg(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, FilterError> {
        let Some(tok) = self.peek().cloned() else {
            return syntax("the condition ends too early");
        };
        self.at += 1;
        match tok {
            Tok::Str(s) => Ok(Cond::Str(s)),
            Tok::Num(n) => Ok(Cond::Num(n)),
            Tok::LParen => {
                if self.keyword("SELECT") || self.keyword("WITH") {
                    return syntax("subqueries are not allowed in a condition");
                }
                let inner = self.or()?;
                self.expect(Tok::RParen, "a closing )")?;
                Ok(inner)
            }
            Tok::Quoted(name) => self.column(name),
            Tok::Ident(w) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "NULL" => Ok(Cond::Null),
                    "TRUE" => Ok(Cond::Bool(true)),
                    "FALSE" => Ok(Cond::Bool(false)),
                    u if QUERY_WORDS.contains(&u) => syntax(format!(
                        "{w} is not allowed: a condition holds columns, literals and operators only"
                    )),
                    u if KEYWORDS.contains(&u) => {
                        syntax(format!("unexpected {w}: a column or a literal is missing"))
                    }
                    _ => self.column(w),
                }
            }
            other => syntax(format!("unexpected {}", show(&other))),
        }
    }

    fn column(&mut self, name: String) -> Result<Cond, FilterError> {
        if self.peek() == Some(&Tok::LParen) {
            return syntax(format!(
                "function calls are not allowed ({name}(…)): a condition holds columns, literals and operators only"
            ));
        }
        Ok(Cond::Column(name))
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Ident(w) => format!("{w:?}"),
        Tok::Quoted(w) => format!("\"{w}\""),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Num(n) => n.clone(),
        Tok::Op(o) => format!("{o:?}"),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
    }
}

/// Parse a condition; `Err` says what is not allowed or malformed.
pub fn parse(text: &str) -> Result<Cond, FilterError> {
    if text.len() > MAX_LEN {
        return Err(FilterError::TooLong { max: MAX_LEN });
    }
    let toks = lex(text)?;
    if toks.is_empty() {
        return Err(FilterError::Empty);
    }
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
    };
    let cond = p.or()?;
    if p.at < p.toks.len() {
        return syntax(format!("unexpected text{}", p.near()));
    }
    if cond.nodes() > MAX_NODES {
        return syntax(format!(
            "the condition has more than {MAX_NODES} terms and operators"
        ));
    }
    let cond = cond.balanced();
    let depth = cond.depth();
    if depth > MAX_TREE_DEPTH {
        return syntax(format!(
            "the condition nests too deep ({depth} levels of NOT, minus signs, parentheses and \
             operators within one another; at most {MAX_TREE_DEPTH})"
        ));
    }
    Ok(cond)
}

/// Operators whose chains may be regrouped without changing the result (`a AND b AND c` is
/// `a AND (b AND c)`; for `+` and `*` up to floating-point rounding).
const ASSOCIATIVE: [&str; 4] = ["AND", "OR", "+", "*"];

impl Cond {
    /// Operands and operators in the condition.
    fn nodes(&self) -> usize {
        1 + match self {
            Cond::Column(_) | Cond::Str(_) | Cond::Num(_) | Cond::Bool(_) | Cond::Null => 0,
            Cond::Neg(x) | Cond::Not(x) | Cond::IsNull(x, _) | Cond::Like(x, _, _) => x.nodes(),
            Cond::Binary(a, _, b) => a.nodes() + b.nodes(),
            Cond::In(x, items, _) => x.nodes() + items.len(),
            Cond::Between(x, a, b, _) => x.nodes() + a.nodes() + b.nodes(),
        }
    }

    /// How deep operations nest (a literal or a column is 1).
    fn depth(&self) -> usize {
        1 + match self {
            Cond::Column(_) | Cond::Str(_) | Cond::Num(_) | Cond::Bool(_) | Cond::Null => 0,
            Cond::Neg(x) | Cond::Not(x) | Cond::IsNull(x, _) | Cond::Like(x, _, _) => x.depth(),
            Cond::Binary(a, _, b) => a.depth().max(b.depth()),
            Cond::In(x, _, _) => x.depth(),
            Cond::Between(x, a, b, _) => x.depth().max(a.depth()).max(b.depth()),
        }
    }

    /// The same condition with every chain of one associative operator regrouped as a balanced
    /// tree, so that a chain of n terms nests log2(n) deep instead of n.
    fn balanced(self) -> Cond {
        fn operands(c: Cond, op: &str, out: &mut Vec<Cond>) {
            match c {
                Cond::Binary(a, o, b) if o == op => {
                    operands(*a, op, out);
                    operands(*b, op, out);
                }
                other => out.push(other.balanced()),
            }
        }
        fn build(mut items: Vec<Cond>, op: &'static str) -> Cond {
            if items.len() == 1 {
                return items.remove(0);
            }
            let right = items.split_off(items.len() / 2);
            Cond::Binary(Box::new(build(items, op)), op, Box::new(build(right, op)))
        }
        match self {
            Cond::Binary(a, op, b) if ASSOCIATIVE.contains(&op) => {
                let mut items = Vec::new();
                operands(*a, op, &mut items);
                operands(*b, op, &mut items);
                build(items, op)
            }
            Cond::Binary(a, op, b) => {
                Cond::Binary(Box::new(a.balanced()), op, Box::new(b.balanced()))
            }
            Cond::Neg(x) => Cond::Neg(Box::new(x.balanced())),
            Cond::Not(x) => Cond::Not(Box::new(x.balanced())),
            Cond::IsNull(x, n) => Cond::IsNull(Box::new(x.balanced()), n),
            Cond::Like(x, p, n) => Cond::Like(Box::new(x.balanced()), p, n),
            Cond::In(x, items, n) => Cond::In(Box::new(x.balanced()), items, n),
            Cond::Between(x, a, b, n) => Cond::Between(
                Box::new(x.balanced()),
                Box::new(a.balanced()),
                Box::new(b.balanced()),
                n,
            ),
            leaf => leaf,
        }
    }

    /// Every column the condition names, in order of first use.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_columns(&mut |c| {
            if !out.iter().any(|o: &String| o == c) {
                out.push(c.to_string());
            }
        });
        out
    }

    fn visit_columns(&self, f: &mut dyn FnMut(&str)) {
        match self {
            Cond::Column(c) => f(c),
            Cond::Str(_) | Cond::Num(_) | Cond::Bool(_) | Cond::Null => {}
            Cond::Neg(x) | Cond::Not(x) | Cond::IsNull(x, _) | Cond::Like(x, _, _) => {
                x.visit_columns(f)
            }
            Cond::Binary(a, _, b) => {
                a.visit_columns(f);
                b.visit_columns(f);
            }
            Cond::In(x, items, _) => {
                x.visit_columns(f);
                for i in items {
                    i.visit_columns(f);
                }
            }
            Cond::Between(x, a, b, _) => {
                x.visit_columns(f);
                a.visit_columns(f);
                b.visit_columns(f);
            }
        }
    }

    /// Canonical SQL of the condition: every column quoted, every literal escaped, every
    /// operation parenthesized.
    pub fn to_sql(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Cond::Column(c) => {
                let _ = write!(out, "\"{}\"", c.replace('"', "\"\""));
            }
            Cond::Str(s) => {
                let _ = write!(out, "'{}'", s.replace('\'', "''"));
            }
            Cond::Num(n) => out.push_str(n),
            Cond::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
            Cond::Null => out.push_str("NULL"),
            Cond::Neg(x) => {
                out.push_str("(-");
                x.write(out);
                out.push(')');
            }
            Cond::Not(x) => {
                out.push_str("(NOT ");
                x.write(out);
                out.push(')');
            }
            Cond::Binary(a, op, b) => {
                out.push('(');
                a.write(out);
                let _ = write!(out, " {op} ");
                b.write(out);
                out.push(')');
            }
            Cond::In(x, items, negated) => {
                out.push('(');
                x.write(out);
                out.push_str(if *negated { " NOT IN (" } else { " IN (" });
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push_str("))");
            }
            Cond::Like(x, pattern, negated) => {
                out.push('(');
                x.write(out);
                out.push_str(if *negated { " NOT LIKE " } else { " LIKE " });
                Cond::Str(pattern.clone()).write(out);
                out.push(')');
            }
            Cond::Between(x, low, high, negated) => {
                out.push('(');
                x.write(out);
                out.push_str(if *negated {
                    " NOT BETWEEN "
                } else {
                    " BETWEEN "
                });
                low.write(out);
                out.push_str(" AND ");
                high.write(out);
                out.push(')');
            }
            Cond::IsNull(x, negated) => {
                out.push('(');
                x.write(out);
                out.push_str(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
        }
    }
}

/// Why a condition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Nothing but spaces.
    #[error("the condition is empty")]
    Empty,
    /// Over the length bound.
    #[error("the condition is longer than {max} bytes")]
    TooLong {
        /// The bound.
        max: usize,
    },
    /// Not in the grammar (with what and where).
    #[error("{0}")]
    Syntax(String),
    /// A column that is not among the known ones.
    #[error("no column {name:?} in the catalog (columns: {})", .known.join(", "))]
    UnknownColumn {
        /// As written.
        name: String,
        /// The columns there are.
        known: Vec<String>,
    },
    /// One of the above, in the condition `text`.
    #[error("where {}: {error}", quoted(.text))]
    In {
        /// The condition as given.
        text: String,
        /// What is wrong with it.
        error: Box<FilterError>,
    },
}

/// A condition as quoted in a message: its first 200 characters (an answer does not echo
/// kilobytes of a request back).
pub fn quoted(text: &str) -> String {
    const SHOWN: usize = 200;
    if text.chars().count() <= SHOWN {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{head:?}… ({} bytes)", text.len())
    }
}

/// A syntax error (what the grammar did not expect).
fn syntax<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError::Syntax(message.into()))
}

/// Check a condition and give its canonical SQL; when `columns` is given, every column the
/// condition names must be one of them.
pub fn canonical(text: &str, columns: Option<&[String]>) -> Result<String, FilterError> {
    let cond = parse(text).map_err(|e| FilterError::In {
        text: text.to_string(),
        error: Box::new(e),
    })?;
    if let Some(known) = columns {
        for c in cond.columns() {
            if !known.contains(&c) {
                return Err(FilterError::In {
                    text: text.to_string(),
                    error: Box::new(FilterError::UnknownColumn {
                        name: c,
                        known: known.to_vec(),
                    }),
                });
            }
        }
    }
    Ok(cond.to_sql())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_into_canonical_sql() {
        for (text, sql) in [
            ("region = 'east'", "(\"region\" = 'east')"),
            (
                "age >= 18 AND region = 'west'",
                "((\"age\" >= 18) AND (\"region\" = 'west'))",
            ),
            (
                "domain IN ('finance', 'medical') OR NOT kind = 'sft'",
                "((\"domain\" IN ('finance', 'medical')) OR (NOT (\"kind\" = 'sft')))",
            ),
            ("task LIKE 'qa%'", "(\"task\" LIKE 'qa%')"),
            ("region IS NOT NULL", "(\"region\" IS NOT NULL)"),
            ("age BETWEEN 18 AND 30", "(\"age\" BETWEEN 18 AND 30)"),
            ("tokens * 2 - 1 > -3.5", "(((\"tokens\" * 2) - 1) > (-3.5))"),
            ("city = 'O''Hara'", "(\"city\" = 'O''Hara')"),
            ("\"地区\" = '华东'", "(\"地区\" = '华东')"),
            ("年龄 <> 20", "(\"年龄\" != 20)"),
            ("x not in (1, -2, null)", "(\"x\" NOT IN (1, -2, NULL))"),
        ] {
            assert_eq!(
                parse(text).map(|c| c.to_sql()),
                Ok(sql.to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn functions_subqueries_and_tables_are_refused() {
        for text in [
            "domain IN (SELECT x FROM read_csv('/etc/passwd'))",
            "domain in (select x from READ_CSV('/etc/passwd'))",
            "domain IN (SeLeCt * FrOm read_parquet('http://127.0.0.1:9/x'))",
            "read_csv('/etc/passwd') IS NULL",
            "Read_Csv ('/etc/passwd') IS NULL",
            "\"read_csv\"('/etc/passwd') IS NULL",
            "lower(region) = 'east'",
            "(SELECT 1) = 1",
            "EXISTS (SELECT 1)",
            "t.region = 'east'",
            "region = 'east'; DROP TABLE x",
            "region = 'east' -- comment",
            "region = 'east' /* x */",
            "CAST(age AS INT) > 3",
            "CASE WHEN age > 3 THEN 1 END = 1",
            "region = (SELECT region FROM self)",
            "",
            "region =",
            "region = 'open",
            "age >",
            "((((",
        ] {
            assert!(parse(text).is_err(), "{text:?} must be refused");
        }
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).is_err());
        assert!(parse(&"a = 1 AND ".repeat(1000)).is_err());
    }

    #[test]
    fn unknown_columns_are_named() {
        let cols = vec!["domain".to_string(), "age".to_string()];
        assert!(canonical("age > 3", Some(&cols)).is_ok());
        let err = canonical("region = 'east'", Some(&cols)).expect_err("unknown");
        let FilterError::In { error, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            **error,
            FilterError::UnknownColumn {
                name: "region".into(),
                known: cols.clone()
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("\"region\"") && text.contains("domain, age"),
            "{text}"
        );
        assert_eq!(parse(""), Err(FilterError::Empty));
        assert!(matches!(
            parse(&"a".repeat(100_000)),
            Err(FilterError::TooLong { .. })
        ));
    }
}
