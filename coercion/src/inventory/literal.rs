//! INI values as ansible-core reads them: `ast.literal_eval` of the text, the text itself when
//! it is no Python literal.

use serde_json::{Map, Number, Value};

/// How deep lists and maps may nest in one value.
const MAX_DEPTH: usize = 64;

/// The value of an INI variable: the Python literal it spells, or the text itself.
pub(crate) fn ini_value(text: &str) -> Value {
    let mut parser = Parser {
        rest: text.trim_start_matches([' ', '\t']),
        depth: 0,
    };
    match parser.value() {
        Some(value) if parser.at_end() => value,
        _ => Value::String(text.to_owned()),
    }
}

struct Parser<'a> {
    rest: &'a str,
    depth: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// Whether only blanks and a `#` comment are left, as Python's tokenizer allows.
    fn at_end(&mut self) -> bool {
        self.skip_space();
        self.rest.is_empty() || self.rest.starts_with('#')
    }

    fn eat(&mut self, token: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.skip_space();
        let c = self.rest.chars().next()?;
        match c {
            '[' | '(' => {
                let close = if c == '[' { ']' } else { ')' };
                self.rest = &self.rest[1..];
                self.nested(|p| p.sequence(close))
            }
            '{' => {
                self.rest = &self.rest[1..];
                self.nested(Parser::braces)
            }
            '\'' | '"' => self.strings(),
            '-' | '+' => {
                self.rest = &self.rest[1..];
                self.skip_space();
                let number = self.number()?;
                if c == '+' {
                    return Some(number);
                }
                match number {
                    Value::Number(n) => {
                        if let Some(i) = n.as_u64() {
                            if i <= i64::MAX as u64 + 1 {
                                return Some(Value::Number(Number::from(
                                    0i64.wrapping_sub_unsigned(i),
                                )));
                            }
                            None
                        } else {
                            Number::from_f64(-n.as_f64()?).map(Value::Number)
                        }
                    }
                    _ => None,
                }
            }
            '0'..='9' | '.' => self.number(),
            _ => {
                let word_len = self
                    .rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(self.rest.len());
                let word = &self.rest[..word_len];
                let value = match word {
                    "True" => Value::Bool(true),
                    "False" => Value::Bool(false),
                    "None" => Value::Null,
                    _ => return None,
                };
                self.rest = &self.rest[word_len..];
                Some(value)
            }
        }
    }

    fn nested(&mut self, parse: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    /// A list or tuple after its opening bracket (a one-element tuple needs its comma, or the
    /// brackets are only parentheses).
    fn sequence(&mut self, close: char) -> Option<Value> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.eat(close) {
                break;
            }
            items.push(self.value()?);
            trailing_comma = self.eat(',');
            if !trailing_comma {
                if self.eat(close) {
                    break;
                }
                return None;
            }
        }
        if close == ')' && items.len() == 1 && !trailing_comma {
            return items.pop();
        }
        Some(Value::Array(items))
    }

    /// A dict, or a set (made a list), after its opening brace.
    fn braces(&mut self) -> Option<Value> {
        if self.eat('}') {
            return Some(Value::Object(Map::new()));
        }
        let first = self.value()?;
        if self.eat(':') {
            let mut map = Map::new();
            let mut key = first;
            loop {
                let value = self.value()?;
                map.insert(key_text(key), value);
                if !self.eat(',') {
                    return self.eat('}').then_some(Value::Object(map));
                }
                if self.eat('}') {
                    return Some(Value::Object(map));
                }
                key = self.value()?;
                if !self.eat(':') {
                    return None;
                }
            }
        }
        let mut items = vec![first];
        loop {
            if !self.eat(',') {
                return self.eat('}').then_some(Value::Array(items));
            }
            if self.eat('}') {
                return Some(Value::Array(items));
            }
            let item = self.value()?;
            if !items.contains(&item) {
                items.push(item);
            }
        }
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Option<Value> {
        let mut text = String::new();
        loop {
            self.skip_space();
            match self.rest.chars().next() {
                Some(q @ ('\'' | '"')) => text.push_str(&self.string(q)?),
                _ => return Some(Value::String(text)),
            }
        }
    }

    fn string(&mut self, quote: char) -> Option<String> {
        let triple: String = [quote; 3].iter().collect();
        let long = self.rest.starts_with(&triple);
        self.rest = &self.rest[if long { 3 } else { 1 }..];
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if long && self.rest[i..].starts_with(&triple) {
                self.rest = &self.rest[i + 3..];
                return Some(out);
            }
            if !long && c == quote {
                self.rest = &self.rest[i + 1..];
                return Some(out);
            }
            match c {
                '\n' if !long => return None,
                '\\' => {
                    let (_, e) = chars.next()?;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'a' => out.push('\u{7}'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'v' => out.push('\u{b}'),
                        '\\' | '\'' | '"' => out.push(e),
                        '\n' => {}
                        'x' | 'u' | 'U' => {
                            let len = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let mut code = 0u32;
                            for _ in 0..len {
                                let (_, d) = chars.next()?;
                                code = code * 16 + d.to_digit(16)?;
                            }
                            out.push(char::from_u32(code)?);
                        }
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                c => out.push(c),
            }
        }
        None
    }

    /// A Python int or float literal: `80`, `0x1F`, `1_000`, `1.5`, `.5`, `1e3`; `01` is none
    /// (Python refuses leading zeros), and nor is `inf` (no literal).
    fn number(&mut self) -> Option<Value> {
        let len = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(self.rest.len());
        // An exponent sign belongs to the number: `1e-3`.
        let mut len = len;
        let bytes = self.rest.as_bytes();
        if len < bytes.len()
            && (bytes[len] == b'-' || bytes[len] == b'+')
            && len > 0
            && matches!(bytes[len - 1], b'e' | b'E')
            && !self.rest[..len].starts_with("0x")
        {
            len += 1 + self.rest[len + 1..]
                .find(|c: char| !(c.is_ascii_digit() || c == '_'))
                .unwrap_or(self.rest.len() - len - 1);
        }
        let token = &self.rest[..len];
        let value = python_number(token)?;
        self.rest = &self.rest[len..];
        Some(value)
    }
}

fn python_number(token: &str) -> Option<Value> {
    let well_underscored = |digits: &str| {
        !digits.is_empty()
            && !digits.starts_with('_')
            && !digits.ends_with('_')
            && !digits.contains("__")
    };
    let lower = token.to_ascii_lowercase();
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = lower.strip_prefix(prefix) {
            let digits = digits.strip_prefix('_').unwrap_or(digits);
            if !well_underscored(digits) {
                return None;
            }
            return u64::from_str_radix(&digits.replace('_', ""), radix)
                .ok()
                .map(Value::from);
        }
    }
    if token.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        if !well_underscored(token)
            || (token.len() > 1
                && token.starts_with('0')
                && token.bytes().any(|b| b != b'0' && b != b'_'))
        {
            return None;
        }
        return token.replace('_', "").parse::<u64>().ok().map(Value::from);
    }
    // A float: digits, at most one '.', an optional exponent; `j` (complex) is not one we keep.
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits_ok = |d: &str| {
        d.is_empty() || (well_underscored(d) && d.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
    };
    if !digits_ok(whole) || !digits_ok(fraction) || (!mantissa.contains('.') && exponent.is_none())
    {
        return None;
    }
    if let Some(e) = exponent {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        if e.is_empty() || !digits_ok(e) {
            return None;
        }
    }
    let float: f64 = lower.replace('_', "").parse().ok()?;
    Number::from_f64(float).map(Value::Number)
}

fn key_text(key: Value) -> String {
    match key {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::ini_value;
    use serde_json::{Value, json};

    #[test]
    fn python_literals_become_values() {
        assert_eq!(ini_value("80"), json!(80));
        assert_eq!(ini_value("-3"), json!(-3));
        assert_eq!(ini_value("1.5"), json!(1.5));
        assert_eq!(ini_value("1e3"), json!(1000.0));
        assert_eq!(ini_value("0x1F"), json!(31));
        assert_eq!(ini_value("1_000"), json!(1000));
        assert_eq!(ini_value("True"), json!(true));
        assert_eq!(ini_value("None"), Value::Null);
        assert_eq!(ini_value("'a b'"), json!("a b"));
        assert_eq!(ini_value(r#""x\ty""#), json!("x\ty"));
        assert_eq!(ini_value("'a' 'b'"), json!("ab"));
        assert_eq!(ini_value("[1, 'two', [3]]"), json!([1, "two", [3]]));
        assert_eq!(ini_value("(1,)"), json!([1]));
        assert_eq!(ini_value("(1)"), json!(1));
        assert_eq!(
            ini_value("{'a': 1, 'b': [True]}"),
            json!({"a": 1, "b": [true]})
        );
        assert_eq!(ini_value("{1, 2}"), json!([1, 2]));
        assert_eq!(ini_value("80 # a comment"), json!(80));
    }

    #[test]
    fn anything_else_stays_text() {
        for text in [
            "FALSE", "true", "yes", "10.0.0.1", "01", "web1", "1 2", "[1,", "{'a'}x", "abc # c",
            "", "1__0", "inf", "1j", "'open", "-x", "0x",
        ] {
            assert_eq!(ini_value(text), json!(text), "{text:?}");
        }
    }
}
