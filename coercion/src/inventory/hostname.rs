//! Host names as inventories write them: `name`, `name:port`, `[ipv6]:port`, and ranges
//! (`web[01:20]`, `db-[a:f]`, `node[0:10:2]`); and the `shlex` word splitting of INI host lines.

/// How many hosts one name may expand to; a larger range is refused rather than filling memory.
const MAX_EXPANSION: usize = 100_000;

/// The letters a letter range runs over, in Python's `string.ascii_letters` order, as Ansible.
const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Splits a host entry into its expanded host names and its port, if it has one.
pub(crate) fn parse_host(entry: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let (name, port) = split_port(entry)?;
    if name.is_empty() {
        return Err(format!("a host needs a name: {entry:?}"));
    }
    let names = expand(name).map_err(|message| format!("{message}: {entry:?}"))?;
    for name in &names {
        if name == "---" {
            return Err(format!(
                "{entry:?} is not a host name; '---' is a sign that this file is YAML"
            ));
        }
    }
    Ok((names, port))
}

fn split_port(entry: &str) -> Result<(&str, Option<u16>), String> {
    // `[2001:db8::1]:2222`: a bracketed IPv6 address (two colons at least, or `::`), so that a
    // range such as `[1:3]` is not taken for one.
    if let Some(rest) = entry.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        let inside = &rest[..end];
        let ipv6 = (inside.contains("::") || inside.matches(':').count() >= 7)
            && inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if ipv6 {
            let after = &rest[end + 1..];
            return match after.strip_prefix(':') {
                None if after.is_empty() => Ok((inside, None)),
                None => Err(format!(
                    "unexpected {after:?} after an IPv6 address: {entry:?}"
                )),
                Some(port) => Ok((inside, Some(parse_port(port, entry)?))),
            };
        }
    }
    let mut depth = 0usize;
    let mut colons = Vec::new();
    for (i, c) in entry.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => colons.push(i),
            _ => {}
        }
    }
    match colons.as_slice() {
        [] => Ok((entry, None)),
        [at] => Ok((&entry[..*at], Some(parse_port(&entry[at + 1..], entry)?))),
        // Several colons outside brackets: a bare IPv6 address, which cannot carry a port.
        _ => Ok((entry, None)),
    }
}

fn parse_port(port: &str, entry: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err(format!(
            "a host cannot end in ':', which is there to give a port, as in web1:2222: {entry:?}"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "{port:?} is not a port number (1 to 65535): {entry:?}"
        )),
    }
}

/// The most ranges one host name may hold.
const MAX_RANGES: usize = 16;

/// Expands the ranges of a host name; the message of an error says what is wrong, not where.
pub(crate) fn expand(name: &str) -> Result<Vec<String>, String> {
    // Each range is one level of recursion: bound them, whatever the line's length.
    if name.matches('[').count() > MAX_RANGES {
        return Err(format!("a host name may hold at most {MAX_RANGES} ranges"));
    }
    let Some(open) = name.find('[') else {
        if name.contains(']') {
            return Err("a ']' without its '[' in a host name".to_owned());
        }
        return Ok(vec![name.to_owned()]);
    };
    let Some(close) = name[open..].find(']').map(|i| open + i) else {
        return Err("a '[' without its ']' in a host name".to_owned());
    };
    let (prefix, inside, suffix) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    let items = range_items(inside)?;
    let tails = expand(suffix)?;
    if items.len().saturating_mul(tails.len()) > MAX_EXPANSION {
        return Err(format!(
            "a host range may make at most {MAX_EXPANSION} hosts"
        ));
    }
    let mut names = Vec::with_capacity(items.len() * tails.len());
    for item in &items {
        for tail in &tails {
            names.push(format!("{prefix}{item}{tail}"));
        }
    }
    Ok(names)
}

fn range_items(inside: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = inside.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [start, end] => (*start, *end, ""),
        [start, end, step] => (*start, *end, *step),
        [_] => return Err("a host range needs a start and an end, as in web[01:20]".to_owned()),
        _ => {
            return Err(
                "a host range is [start:end] or [start:end:step], as in web[01:20:2]".to_owned(),
            );
        }
    };
    if end.is_empty() {
        return Err("a host range needs a start and an end, as in web[01:20]".to_owned());
    }
    // As Ansible: an empty start counts from 0.
    let start = if start.is_empty() { "0" } else { start };
    let step = if step.is_empty() {
        1
    } else {
        match step.parse::<usize>() {
            Ok(s) if s > 0 && step.bytes().all(|b| b.is_ascii_digit()) => s,
            _ => {
                return Err(format!(
                    "a host range's step must be a whole number above 0, not {step:?}"
                ));
            }
        }
    };
    let letter = |s: &str| (s.chars().count() == 1).then(|| LETTERS.find(s)).flatten();
    if let (Some(a), Some(b)) = (letter(start), letter(end)) {
        if a > b {
            return Err(format!(
                "a host range must not run backwards ({start} is after {end})"
            ));
        }
        return Ok((a..=b)
            .step_by(step)
            .map(|i| LETTERS[i..=i].to_owned())
            .collect());
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(start) || !digits(end) {
        return Err(
            "a host range runs over numbers or over single letters, as in web[01:20] or db-[a:f]"
                .to_owned(),
        );
    }
    let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) else {
        return Err("a host range's numbers are too large".to_owned());
    };
    let width = if start.len() > 1 && start.starts_with('0') {
        if end.len() != start.len() {
            return Err(format!(
                "a zero-padded host range needs a start and an end of the same width, as in [01:20], not [{start}:{end}]"
            ));
        }
        start.len()
    } else {
        0
    };
    if a > b {
        return Err(format!(
            "a host range must not run backwards ({start} is after {end})"
        ));
    }
    if (b - a) / step as u64 >= MAX_EXPANSION as u64 {
        return Err(format!(
            "a host range may make at most {MAX_EXPANSION} hosts"
        ));
    }
    Ok((a..=b)
        .step_by(step)
        .map(|i| format!("{i:0width$}"))
        .collect())
}

/// Splits an INI host line into words as Python's `shlex.split(line, comments=True)` does:
/// whitespace separates words, `'…'` and `"…"` group them (a backslash escapes `"` and `\`
/// inside double quotes, and any character outside quotes), and an unquoted `#` ends the line.
pub(crate) fn shlex_split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '#' => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err("a quotation is not closed".to_owned()),
                        Some('\'') => break,
                        Some(c) => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err("a quotation is not closed".to_owned()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err("a quotation is not closed".to_owned()),
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        Some(c) => w.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                None => return Err("a backslash at the end of the line escapes nothing".to_owned()),
                Some(c) => word.get_or_insert_with(String::new).push(c),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_as_ansible() {
        assert_eq!(expand("web[01:03]").unwrap(), ["web01", "web02", "web03"]);
        assert_eq!(expand("db-[a:c]").unwrap(), ["db-a", "db-b", "db-c"]);
        assert_eq!(expand("n[0:6:3]").unwrap(), ["n0", "n3", "n6"]);
        assert_eq!(expand("n[:1]x").unwrap(), ["n0x", "n1x"]);
        assert_eq!(
            expand("r[1:2]c[a:b]").unwrap(),
            ["r1ca", "r1cb", "r2ca", "r2cb"]
        );
        assert_eq!(expand("w[8:10]").unwrap(), ["w8", "w9", "w10"]);
        assert!(expand("w[3:1]").unwrap_err().contains("backwards"));
        assert!(expand("w[01:100]").unwrap_err().contains("same width"));
        assert!(expand("w[1:2:0]").unwrap_err().contains("step"));
        assert!(
            expand("w[1:b]")
                .unwrap_err()
                .contains("numbers or over single letters")
        );
        assert!(expand("w[0:99999999999]").unwrap_err().contains("at most"));
        assert!(expand("w[1:2").unwrap_err().contains("without its ']'"));
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(
            parse_host("web1:2222").unwrap(),
            (vec!["web1".to_owned()], Some(2222))
        );
        assert_eq!(
            parse_host("[::1]:22").unwrap(),
            (vec!["::1".to_owned()], Some(22))
        );
        assert_eq!(
            parse_host("fe80::1").unwrap(),
            (vec!["fe80::1".to_owned()], None)
        );
        assert_eq!(parse_host("w[1:2]:22").unwrap().0, ["w1", "w2"]);
        assert!(
            parse_host("web1:")
                .unwrap_err()
                .contains("cannot end in ':'")
        );
        assert!(parse_host("web1:99999").unwrap_err().contains("not a port"));
    }

    #[test]
    fn shlex_words() {
        assert_eq!(
            shlex_split(r#"web1 a="x y" b='1 2' c=d\ e # comment"#).unwrap(),
            ["web1", "a=x y", "b=1 2", "c=d e"]
        );
        assert_eq!(shlex_split("a=b#c d").unwrap(), ["a=b"]);
        assert!(shlex_split("a='x").is_err());
    }
}
