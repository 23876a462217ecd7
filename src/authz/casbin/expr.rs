//! Matcher expressions: the subset of Casbin's expression language that RBAC
//! models use. Anything else is refused when the model loads, with an error
//! that names the construct, never evaluated to a silent wrong answer.
//!
//! ```text
//! or      := and ("||" and)*
//! and     := unary ("&&" unary)*
//! unary   := "!" unary | compare
//! compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum | "in" "(" sum ("," sum)* ")")?
//! sum     := primary ("+" primary)*
//! primary := string | number | true | false | r.x | p.x | name "(" args ")" | "(" or ")"
//! ```

use super::CasbinError;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Num(f64),
    Bool(bool),
    /// `r.sub`: the request (`r`) or policy (`p`) field at this position.
    Field {
        request: bool,
        index: usize,
    },
    Call {
        function: Function,
        args: Vec<Expr>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Op, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    Concat(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Function {
    /// `g`, `g2`, …: role links, with 2 arguments or 3 (with a domain).
    Role(String),
    KeyMatch,
    KeyMatch2,
    KeyMatch3,
    RegexMatch,
    IpMatch,
    GlobMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Value {
    pub fn truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Num(f64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Dot,
}

fn tokenize(text: &str) -> Result<Vec<Token>, CasbinError> {
    let unsupported = |what: &str| CasbinError::Unsupported(format!("{what} in matcher {text:?}"));
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '.' => {
                tokens.push(Token::Dot);
                i += 1;
            }
            '"' | '\'' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                if i == chars.len() {
                    return Err(CasbinError::Model(format!(
                        "unterminated string in matcher {text:?}"
                    )));
                }
                i += 1;
                tokens.push(Token::Str(s));
            }
            '0'..='9' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                tokens
                    .push(Token::Num(s.parse().map_err(|_| {
                        CasbinError::Model(format!("bad number {s:?}"))
                    })?));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            _ => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let op = ["==", "!=", "<=", ">=", "&&", "||", "=~"]
                    .into_iter()
                    .find(|op| two == *op);
                if let Some(op) = op {
                    if op == "=~" {
                        return Err(unsupported("the regex operator =~ (use regexMatch)"));
                    }
                    tokens.push(Token::Op(op));
                    i += 2;
                } else {
                    let op = match c {
                        '!' => "!",
                        '<' => "<",
                        '>' => ">",
                        '+' => "+",
                        '-' | '*' | '/' | '%' => {
                            return Err(unsupported(&format!("arithmetic operator {c:?}")));
                        }
                        '?' | ':' => return Err(unsupported("the ternary operator")),
                        '[' | ']' => return Err(unsupported("array syntax")),
                        other => {
                            return Err(CasbinError::Model(format!(
                                "unexpected {other:?} in matcher {text:?}"
                            )));
                        }
                    };
                    tokens.push(Token::Op(op));
                    i += 1;
                }
            }
        }
    }
    Ok(tokens)
}

/// What a field name means: its position among the request or policy fields.
pub struct Fields<'a> {
    pub request: &'a [String],
    pub policy: &'a [String],
    pub roles: &'a [String],
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    fields: &'a Fields<'a>,
    text: &'a str,
    /// Parentheses, negations and calls open around the current token.
    depth: usize,
}

/// Nesting deeper than this is refused: the parser and the evaluator
/// recurse, and a model file is user input (a deep one overflowed the stack).
const MAX_NESTING: usize = 64;
/// Tokens in one matcher: long chains of `&&` nest as deeply in the tree.
const MAX_TOKENS: usize = 4096;

pub fn parse(text: &str, fields: &Fields<'_>) -> Result<Expr, CasbinError> {
    let tokens = tokenize(text)?;
    if tokens.len() > MAX_TOKENS {
        return Err(CasbinError::Model(format!(
            "the matcher has {} tokens; at most {MAX_TOKENS} are accepted",
            tokens.len()
        )));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        fields,
        text,
        depth: 0,
    };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(parser.error("unexpected trailing input"));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn error(&self, what: &str) -> CasbinError {
        CasbinError::Model(format!(
            "{what} at token {} of matcher {:?}",
            self.at + 1,
            self.text
        ))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: Token) -> Result<(), CasbinError> {
        if self.next() == Some(token.clone()) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {token:?}")))
        }
    }

    fn or(&mut self) -> Result<Expr, CasbinError> {
        let mut left = self.and()?;
        while self.eat_op("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, CasbinError> {
        let mut left = self.unary()?;
        while self.eat_op("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn nested<T>(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<T, CasbinError>,
    ) -> Result<T, CasbinError> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(&format!("nesting deeper than {MAX_NESTING}")));
        }
        self.depth += 1;
        let out = inner(self);
        self.depth -= 1;
        out
    }

    fn unary(&mut self) -> Result<Expr, CasbinError> {
        if self.eat_op("!") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, CasbinError> {
        let left = self.sum()?;
        let op = match self.peek() {
            Some(Token::Op("==")) => Op::Eq,
            Some(Token::Op("!=")) => Op::Ne,
            Some(Token::Op("<")) => Op::Lt,
            Some(Token::Op("<=")) => Op::Le,
            Some(Token::Op(">")) => Op::Gt,
            Some(Token::Op(">=")) => Op::Ge,
            Some(Token::Ident(word)) if word == "in" => {
                self.at += 1;
                self.expect(Token::LParen)?;
                let mut items = vec![self.sum()?];
                while self.peek() == Some(&Token::Comma) {
                    self.at += 1;
                    items.push(self.sum()?);
                }
                self.expect(Token::RParen)?;
                return Ok(Expr::In(Box::new(left), items));
            }
            _ => return Ok(left),
        };
        self.at += 1;
        Ok(Expr::Compare(op, Box::new(left), Box::new(self.sum()?)))
    }

    fn sum(&mut self) -> Result<Expr, CasbinError> {
        let mut left = self.primary()?;
        while self.eat_op("+") {
            left = Expr::Concat(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, CasbinError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Num(n)) => Ok(Expr::Num(n)),
            Some(Token::LParen) => self.nested(|p| {
                let inner = p.or()?;
                p.expect(Token::RParen)?;
                Ok(inner)
            }),
            Some(Token::Ident(name)) => match name.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                _ if self.peek() == Some(&Token::Dot) => self.field(&name),
                _ if self.peek() == Some(&Token::LParen) => self.nested(|p| p.call(name)),
                _ => Err(self.error(&format!("unknown name {name:?}"))),
            },
            other => Err(self.error(&format!("unexpected {other:?}"))),
        }
    }

    fn field(&mut self, owner: &str) -> Result<Expr, CasbinError> {
        self.at += 1; // the dot
        let Some(Token::Ident(field)) = self.next() else {
            return Err(self.error("expected a field name after ."));
        };
        if self.peek() == Some(&Token::Dot) {
            return Err(CasbinError::Unsupported(format!(
                "attribute access {owner}.{field}.… (ABAC) in matcher {:?}",
                self.text
            )));
        }
        let (request, names) = match owner {
            "r" => (true, self.fields.request),
            "p" => (false, self.fields.policy),
            other if other.starts_with('r') || other.starts_with('p') => {
                return Err(CasbinError::Unsupported(format!(
                    "more than one request or policy type ({other}.{field})"
                )));
            }
            other => return Err(self.error(&format!("unknown name {other}.{field}"))),
        };
        let index = names.iter().position(|n| *n == field).ok_or_else(|| {
            CasbinError::Model(format!("{owner}.{field} is not in the {owner} definition"))
        })?;
        Ok(Expr::Field { request, index })
    }

    fn call(&mut self, name: String) -> Result<Expr, CasbinError> {
        self.at += 1; // the parenthesis
        let mut args = Vec::new();
        if self.peek() != Some(&Token::RParen) {
            args.push(self.or()?);
            while self.peek() == Some(&Token::Comma) {
                self.at += 1;
                args.push(self.or()?);
            }
        }
        self.expect(Token::RParen)?;
        let function = match name.as_str() {
            "keyMatch" => Function::KeyMatch,
            "keyMatch2" => Function::KeyMatch2,
            "keyMatch3" => Function::KeyMatch3,
            "regexMatch" => Function::RegexMatch,
            "ipMatch" => Function::IpMatch,
            "globMatch" => Function::GlobMatch,
            role if self.fields.roles.iter().any(|r| r == role) => {
                if !(2..=3).contains(&args.len()) {
                    return Err(self.error(&format!("{role}() takes 2 or 3 arguments")));
                }
                return Ok(Expr::Call {
                    function: Function::Role(name),
                    args,
                });
            }
            "eval" => {
                return Err(CasbinError::Unsupported(format!(
                    "eval() in matcher {:?}",
                    self.text
                )));
            }
            other => {
                return Err(CasbinError::Unsupported(format!(
                    "function {other}() in matcher {:?}",
                    self.text
                )));
            }
        };
        if args.len() != 2 {
            return Err(self.error(&format!("{name}() takes 2 arguments")));
        }
        Ok(Expr::Call { function, args })
    }
}

/// What evaluating needs from the enforcer.
pub trait Context {
    fn field(&self, request: bool, index: usize) -> &str;
    fn call(&self, function: &Function, args: &[String]) -> Result<bool, CasbinError>;
}

pub fn eval(expr: &Expr, cx: &dyn Context) -> Result<Value, CasbinError> {
    Ok(match expr {
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Num(n) => Value::Num(*n),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Field { request, index } => Value::Str(cx.field(*request, *index).to_owned()),
        Expr::Not(e) => Value::Bool(!eval(e, cx)?.truthy()),
        Expr::And(a, b) => Value::Bool(eval(a, cx)?.truthy() && eval(b, cx)?.truthy()),
        Expr::Or(a, b) => Value::Bool(eval(a, cx)?.truthy() || eval(b, cx)?.truthy()),
        Expr::Compare(op, a, b) => {
            let (a, b) = (eval(a, cx)?, eval(b, cx)?);
            let ordering = match (&a, &b) {
                (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
                (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
                (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
                _ => None,
            };
            Value::Bool(match op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                Op::Lt => ordering.is_some_and(|o| o.is_lt()),
                Op::Le => ordering.is_some_and(|o| o.is_le()),
                Op::Gt => ordering.is_some_and(|o| o.is_gt()),
                Op::Ge => ordering.is_some_and(|o| o.is_ge()),
            })
        }
        Expr::In(needle, haystack) => {
            let needle = eval(needle, cx)?;
            let mut found = false;
            for item in haystack {
                found |= eval(item, cx)? == needle;
            }
            Value::Bool(found)
        }
        Expr::Concat(a, b) => match (eval(a, cx)?, eval(b, cx)?) {
            (Value::Num(x), Value::Num(y)) => Value::Num(x + y),
            (x, y) => Value::Str(format!("{}{}", text(&x), text(&y))),
        },
        Expr::Call { function, args } => {
            let args = args
                .iter()
                .map(|a| eval(a, cx).map(|v| text(&v)))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Bool(cx.call(function, &args)?)
        }
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Num(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression (issue 13, finding 13): a deeply nested matcher overflowed
    // the stack of `memberd casbin enforce|import`.
    #[test]
    fn deep_or_long_matchers_are_refused_with_a_message() {
        let request = vec!["sub".to_owned()];
        let policy = vec!["sub".to_owned()];
        let fields = Fields {
            request: &request,
            policy: &policy,
            roles: &[],
        };
        assert!(parse("(r.sub == p.sub)", &fields).is_ok());
        let deep = format!(
            "{}r.sub == p.sub{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let err = parse(&deep, &fields).unwrap_err().to_string();
        assert!(err.contains("tokens") || err.contains("nesting"), "{err}");
        let nested = format!("{}r.sub == p.sub{}", "(".repeat(65), ")".repeat(65));
        assert!(
            parse(&nested, &fields)
                .unwrap_err()
                .to_string()
                .contains("nesting")
        );
        let negated = format!("{}true", "!".repeat(100));
        assert!(parse(&negated, &fields).is_err());
        let long = vec!["r.sub == p.sub"; 2000].join(" && ");
        assert!(
            parse(&long, &fields)
                .unwrap_err()
                .to_string()
                .contains("tokens")
        );
    }
}
