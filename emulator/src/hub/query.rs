//! Owns the IoT Hub query language subset the emulator serves on `POST /devices/query`:
//! `SELECT * FROM devices[.modules] [WHERE cond]`, where `cond` compares twin paths
//! (`deviceId`, `tags.a.b`, `properties.reported.x`, ...) with literals, combined with AND, OR,
//! NOT and parentheses, and `IS_DEFINED(path)`. Keywords are case-insensitive. The same
//! conditions, over a message document, are the `WHERE` of routes ([`Condition`]).

use serde_json::Value;

use super::error::HubError;

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    Star,
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare { path: Vec<String>, op: &'static str, value: Value },
    Defined(Vec<String>),
}

/// A `WHERE` condition on its own (routes), evaluated against a JSON document.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition(Expr);

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, HubError> {
        let mut p = Parser::new(text)?;
        let expr = p.or()?;
        if p.peek().is_some() {
            return Err(query_error("unexpected text after the condition"));
        }
        Ok(Condition(expr))
    }

    pub fn matches(&self, doc: &Value) -> bool {
        eval(&self.0, doc)
    }
}

/// A parsed query: over device twins or module twins, with an optional condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub modules: bool,
    condition: Option<Expr>,
}

fn query_error(why: impl std::fmt::Display) -> HubError {
    HubError::invalid(format!("Query is invalid: {why}"))
}

fn tokenize(text: &str) -> Result<Vec<Token>, HubError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::LParen);
                i += 1
            }
            ')' => {
                out.push(Token::RParen);
                i += 1
            }
            '*' => {
                out.push(Token::Star);
                i += 1
            }
            '\'' | '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(query_error("a string literal is not closed")),
                        // SQL-style escape: a doubled quote stands for one.
                        Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                            s.push(c);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('!', Some('=')) => ("!=", 2),
                    ('<', Some('>')) => ("!=", 2),
                    ('<', Some('=')) => ("<=", 2),
                    ('>', Some('=')) => (">=", 2),
                    ('=', _) => ("=", 1),
                    ('<', _) => ("<", 1),
                    ('>', _) => (">", 1),
                    _ => return Err(query_error("'!' must be followed by '='")),
                };
                out.push(Token::Op(op));
                i += len;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-')) {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                out.push(Token::Num(s.parse().map_err(|_| query_error(format!("'{s}' is not a number")))?));
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$' | '.' | '-')) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(query_error(format!("unexpected character '{other}'"))),
        }
    }
    Ok(out)
}

/// Nesting of parentheses and NOTs: the parser recurses on them, and a hostile query must get
/// a 400, not overflow the stack.
const MAX_NESTING: usize = 32;

/// Long AND/OR chains become equally deep expression trees; this bounds them too.
const MAX_TOKENS: usize = 4096;

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Parser, HubError> {
        let tokens = tokenize(text)?;
        if tokens.len() > MAX_TOKENS {
            return Err(query_error(format!("it has more than {MAX_TOKENS} tokens")));
        }
        Ok(Parser { tokens, pos: 0, depth: 0 })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), HubError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(query_error(format!("expected {kw}")))
        }
    }

    fn or(&mut self) -> Result<Expr, HubError> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, HubError> {
        let mut left = self.factor()?;
        while self.keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, HubError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(query_error(format!("conditions are nested deeper than {MAX_NESTING} levels")));
        }
        let result = self.factor_inner();
        self.depth -= 1;
        result
    }

    fn factor_inner(&mut self) -> Result<Expr, HubError> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.factor()?)));
        }
        match self.next() {
            Some(Token::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Token::RParen) => Ok(e),
                    _ => Err(query_error("a '(' is not closed")),
                }
            }
            Some(Token::Word(f)) if f.eq_ignore_ascii_case("IS_DEFINED") => {
                let path = match (self.next(), self.next(), self.next()) {
                    (Some(Token::LParen), Some(Token::Word(path)), Some(Token::RParen)) => path,
                    _ => return Err(query_error("IS_DEFINED takes one property path")),
                };
                Ok(Expr::Defined(path.split('.').map(str::to_owned).collect()))
            }
            Some(Token::Word(path)) => {
                let op = match self.next() {
                    Some(Token::Op(op)) => op,
                    _ => return Err(query_error(format!("expected a comparison after '{path}'"))),
                };
                let value = match self.next() {
                    Some(Token::Str(s)) => Value::String(s),
                    Some(Token::Num(n)) => serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Value::Null,
                    _ => return Err(query_error(format!("expected a literal after '{path} {op}'"))),
                };
                Ok(Expr::Compare { path: path.split('.').map(str::to_owned).collect(), op, value })
            }
            _ => Err(query_error("expected a condition")),
        }
    }
}

impl Query {
    pub fn parse(text: &str) -> Result<Query, HubError> {
        let mut p = Parser::new(text)?;
        p.expect_keyword("SELECT")?;
        if p.next() != Some(Token::Star) {
            return Err(query_error("only SELECT * is supported"));
        }
        p.expect_keyword("FROM")?;
        let modules = match p.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("devices") => false,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("devices.modules") => true,
            _ => return Err(query_error("only FROM devices or FROM devices.modules is supported")),
        };
        let condition = if p.keyword("WHERE") { Some(p.or()?) } else { None };
        if p.peek().is_some() {
            return Err(query_error("unexpected text after the query"));
        }
        Ok(Query { modules, condition })
    }

    pub fn matches(&self, twin: &Value) -> bool {
        self.condition.as_ref().is_none_or(|c| eval(c, twin))
    }
}

fn lookup<'a>(twin: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(twin, |v, key| v.get(key.as_str()))
}

fn eval(e: &Expr, twin: &Value) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, twin) || eval(b, twin),
        Expr::And(a, b) => eval(a, twin) && eval(b, twin),
        Expr::Not(a) => !eval(a, twin),
        Expr::Defined(path) => lookup(twin, path).is_some(),
        Expr::Compare { path, op, value } => {
            let Some(actual) = lookup(twin, path) else { return false };
            let ordering = match (actual, value) {
                (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
                (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                (a, b) if a == b => Some(std::cmp::Ordering::Equal),
                _ => None,
            };
            use std::cmp::Ordering::*;
            match (*op, ordering) {
                ("=", Some(Equal)) => true,
                ("!=", o) => o != Some(Equal),
                ("<", Some(Less)) | (">", Some(Greater)) => true,
                ("<=", Some(Less | Equal)) | (">=", Some(Greater | Equal)) => true,
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn twins() -> Vec<Value> {
        vec![
            json!({"deviceId": "a", "tags": {"site": {"city": "Rome"}}, "properties": {"reported": {"temp": 20, "ok": true}}}),
            json!({"deviceId": "b", "tags": {"site": {"city": "Oslo"}}, "properties": {"reported": {"temp": 30}}}),
            json!({"deviceId": "c's", "tags": {}, "properties": {"reported": {}}}),
        ]
    }

    fn ids(q: &str) -> Vec<String> {
        let q = Query::parse(q).unwrap();
        twins().iter().filter(|t| q.matches(t)).map(|t| t["deviceId"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn conditions() {
        assert_eq!(ids("SELECT * FROM devices"), vec!["a", "b", "c's"]);
        assert_eq!(ids("select * from devices where deviceId = 'b'"), vec!["b"]);
        assert_eq!(ids("SELECT * FROM devices WHERE tags.site.city='Rome'"), vec!["a"]);
        assert_eq!(ids("SELECT * FROM devices WHERE properties.reported.temp > 25 OR deviceId = 'c''s'"), vec!["b", "c's"]);
        assert_eq!(ids("SELECT * FROM devices WHERE properties.reported.temp >= 20 AND properties.reported.ok = true"), vec!["a"]);
        assert_eq!(ids("SELECT * FROM devices WHERE NOT (deviceId = 'a' OR deviceId = \"b\")"), vec!["c's"]);
        // A missing property compares as undefined: never true, as in IoT Hub.
        assert_eq!(ids("SELECT * FROM devices WHERE properties.reported.temp <> 20"), vec!["b"]);
        assert!(Query::parse("SELECT * FROM devices.modules").unwrap().modules);
    }

    #[test]
    fn errors_are_400004() {
        for bad in ["", "SELECT deviceId FROM devices", "SELECT * FROM jobs", "SELECT * FROM devices WHERE", "SELECT * FROM devices WHERE a = 'x", "SELECT * FROM devices WHERE (a = 1", "SELECT * FROM devices WHERE a ! 1", "SELECT * FROM devices x"] {
            assert_eq!(Query::parse(bad).unwrap_err().code, 400004, "{bad}");
        }
        let hostile = format!("SELECT * FROM devices WHERE {}a = 1", "(".repeat(100_000));
        assert_eq!(Query::parse(&hostile).unwrap_err().code, 400004);
        let chain = format!("SELECT * FROM devices WHERE a = 1{}", " OR a = 1".repeat(100_000));
        assert_eq!(Query::parse(&chain).unwrap_err().code, 400004);
        let nots = format!("SELECT * FROM devices WHERE {}a = 1", "NOT ".repeat(100_000));
        assert_eq!(Query::parse(&nots).unwrap_err().code, 400004);
        assert!(Query::parse(&format!("SELECT * FROM devices WHERE {}a = 1{}", "(".repeat(10), ")".repeat(10))).is_ok());
    }
}
