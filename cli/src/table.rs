//! Docker's tabular output (`ps`, `images`, `history`): columns padded to
//! their widest cell plus three spaces, as docker's tabwriter lays them
//! out, and no trailing blanks.

/// Lays out `header` and `rows`: every column but the last is as wide as
/// its widest cell plus three, and at least `min_width` (docker's image
/// commands use 20, `ps` none). Widths count characters, so `…` is one.
pub fn table(header: &[&str], rows: &[Vec<String>], min_width: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let widths: Vec<usize> = widths.iter().map(|w| (w + 3).max(min_width)).collect();
    let mut s = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            l.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                l.push_str(&" ".repeat(pad));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn columns_pad_to_widest_plus_three() {
        let rows = vec![vec!["abc".to_string(), "x".to_string()]];
        assert_eq!(table(&["A", "B"], &rows, 0), "A     B\nabc   x\n");
        assert_eq!(
            table(&["A", "B"], &rows, 20),
            format!("A{}B\nabc{}x\n", " ".repeat(19), " ".repeat(17))
        );
    }

    #[test]
    fn no_trailing_blanks() {
        let rows = vec![vec!["a".to_string(), String::new()]];
        assert_eq!(table(&["ID", "NAMES"], &rows, 0), "ID   NAMES\na\n");
    }
}
