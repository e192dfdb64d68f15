//! Reading a Prometheus text page in tests.

/// The value of the sample `series` (`name{labels}` exactly as rendered), which must be there.
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the sample {series} is not a number: {e}"))
}
