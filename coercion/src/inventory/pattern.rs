//! Ansible's host patterns: `all`, names, globs, subscripts, unions, `&` intersections and `!`
//! exclusions.

use std::collections::HashSet;

use super::Inventory;

/// The positions of the hosts `pattern` selects, in inventory order; the error says what is
/// wrong with the pattern.
pub(crate) fn select(inventory: &Inventory, pattern: &str) -> Result<Vec<usize>, String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err("an empty pattern selects nothing; `all` selects every host".to_owned());
    }
    // A host whose name holds a separator (an IPv6 address) is matched whole.
    if let Some(i) = inventory.host_position(pattern) {
        return Ok(vec![i]);
    }
    let terms = split_terms(pattern);
    if terms.is_empty() {
        return Err("the pattern has no term".to_owned());
    }
    let mut unions = Vec::new();
    let mut intersections = Vec::new();
    let mut exclusions = Vec::new();
    for term in terms {
        if let Some(body) = term.strip_prefix('!') {
            exclusions.push(body.trim());
        } else if let Some(body) = term.strip_prefix('&') {
            intersections.push(body.trim());
        } else {
            unions.push(term);
        }
    }
    // As Ansible: a pattern without a union term starts from every host (`!web` is "all but
    // web", `&prod` is "all that is in prod").
    if unions.is_empty() {
        unions.push("all");
    }
    let mut selected: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    for term in unions {
        for i in match_term(inventory, term)? {
            if seen.insert(i) {
                selected.push(i);
            }
        }
    }
    for term in intersections {
        let keep: HashSet<usize> = match_term(inventory, term)?.into_iter().collect();
        selected.retain(|i| keep.contains(i));
    }
    for term in exclusions {
        let drop: HashSet<usize> = match_term(inventory, term)?.into_iter().collect();
        selected.retain(|i| !drop.contains(i));
    }
    selected.sort_unstable();
    Ok(selected)
}

/// Terms separated by commas, or else by colons outside brackets (so `web[0:2]` stays whole).
fn split_terms(pattern: &str) -> Vec<&str> {
    let terms: Vec<&str> = if pattern.contains(',') {
        pattern.split(',').collect()
    } else {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in pattern.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                ':' if depth == 0 => {
                    terms.push(&pattern[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&pattern[start..]);
        terms
    };
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn match_term(inventory: &Inventory, term: &str) -> Result<Vec<usize>, String> {
    if term.is_empty() {
        return Err("a '!' or '&' needs a name after it".to_owned());
    }
    if term == "all" || term == "*" {
        return Ok((0..inventory.hosts.len()).collect());
    }
    if term.starts_with('~') {
        return Err(format!(
            "regex terms such as {term:?} are not supported; use globs (web*)"
        ));
    }
    if let Some(result) = subscript(inventory, term) {
        return result;
    }
    let positions = |names: &[String]| -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| inventory.host_position(n))
            .collect()
    };
    if term.contains(['*', '?', '[']) {
        let pattern: Vec<char> = term.chars().collect();
        let mut found = Vec::new();
        let mut any = false;
        for group in &inventory.groups {
            if glob(&pattern, &group.name) {
                any = true;
                found.extend(positions(&group.hosts));
            }
        }
        for (i, host) in inventory.hosts.iter().enumerate() {
            if glob(&pattern, &host.name) {
                any = true;
                found.push(i);
            }
        }
        return if any {
            Ok(found)
        } else {
            Err(format!("no host or group matches {term:?}"))
        };
    }
    if let Some(group) = inventory.group(term) {
        return Ok(positions(&group.hosts));
    }
    match inventory.host_position(term) {
        Some(i) => Ok(vec![i]),
        None => Err(format!("no host or group is named {term:?}")),
    }
}

/// `group[i]`, `group[-1]`, `group[a:b]` (end included), `group[:b]`, `group[a:]`: hosts of a
/// group by position, as Ansible. `None` when `term` is no subscript of a known group.
fn subscript(inventory: &Inventory, term: &str) -> Option<Result<Vec<usize>, String>> {
    let inner = term.strip_suffix(']')?;
    let open = inner.rfind('[')?;
    let (name, index) = (&inner[..open], &inner[open + 1..]);
    let group = inventory.group(name)?;
    let hosts: Vec<usize> = group
        .hosts
        .iter()
        .filter_map(|n| inventory.host_position(n))
        .collect();
    let len = hosts.len() as i64;
    let number = |s: &str| -> Option<i64> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if let Some((start, end)) = index.split_once(':') {
        let (start, end) = (start.trim(), end.trim());
        let start = if start.is_empty() {
            Some(0)
        } else {
            number(start)
        };
        let end = if end.is_empty() {
            Some(len - 1)
        } else {
            number(end)
        };
        let (Some(start), Some(end)) = (start, end) else {
            return Some(Err(format!(
                "{term:?}: a subscript is [i], [-i] or [start:end]"
            )));
        };
        let resolve = |i: i64| if i < 0 { (len + i).max(0) } else { i };
        let (start, end) = (resolve(start), resolve(end).min(len - 1));
        return Some(Ok(if start > end {
            Vec::new()
        } else {
            hosts[start as usize..=end as usize].to_vec()
        }));
    }
    let i = number(index)?;
    let at = if i < 0 { len + i } else { i };
    Some(if (0..len).contains(&at) {
        Ok(vec![hosts[at as usize]])
    } else {
        Err(format!(
            "{term:?}: group {name:?} has {len} hosts, none at {i}"
        ))
    })
}

/// Shell-style matching as Python's `fnmatch`: `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`.
fn glob(pattern: &[char], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
            continue;
        }
        if p < pattern.len()
            && let Some(width) = one(&pattern[p..], name[n])
        {
            p += width;
            n += 1;
            continue;
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether the pattern's first element matches `c`; if it does, how many pattern characters
/// that element took.
fn one(pattern: &[char], c: char) -> Option<usize> {
    match pattern[0] {
        '?' => Some(1),
        '[' => {
            let negate = matches!(pattern.get(1), Some('!'));
            let start = if negate { 2 } else { 1 };
            // `]` right after `[` or `[!` is a member, as in fnmatch.
            let close = pattern
                .iter()
                .enumerate()
                .skip(start + 1)
                .find(|(_, ch)| **ch == ']')
                .map(|(i, _)| i);
            let Some(close) = close else {
                return (c == '[').then_some(1);
            };
            let set = &pattern[start..close];
            let mut member = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    member |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    member |= set[i] == c;
                    i += 1;
                }
            }
            (member != negate).then_some(close + 1)
        }
        p => (p == c).then_some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    fn g(pattern: &str, name: &str) -> bool {
        glob(&pattern.chars().collect::<Vec<_>>(), name)
    }

    #[test]
    fn globs_match_as_fnmatch() {
        assert!(g("web*", "web1"));
        assert!(g("web*", "web"));
        assert!(!g("web*", "db1"));
        assert!(g("*.example.com", "a.example.com"));
        assert!(g("db-?", "db-a"));
        assert!(!g("db-?", "db-ab"));
        assert!(g("[ab]*", "b2"));
        assert!(g("n[0-3]", "n2"));
        assert!(!g("n[!0-3]", "n2"));
        assert!(g("*a*b*", "xxaxxbxx"));
    }
}
