//! Where each `[[providers]]`, `[[merchants]]` and `[[merchants.endpoints]]`
//! table starts in the TOML text, so validation errors can say
//! `providers "stripe" (line 40)` rather than an index.

/// 1-based line numbers of the array-of-tables headers, in order: the i-th
/// `[[providers]]` header is `providers[i]`, and so on. Endpoints are counted
/// across all merchants, in file order.
#[derive(Debug, Default)]
pub(super) struct ItemLines {
    providers: Vec<usize>,
    merchants: Vec<usize>,
    endpoints: Vec<usize>,
}

impl ItemLines {
    pub(super) fn scan(text: &str) -> ItemLines {
        let mut l = ItemLines::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let header: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            match header.as_str() {
                "[[providers]]" => l.providers.push(n + 1),
                "[[merchants]]" => l.merchants.push(n + 1),
                "[[merchants.endpoints]]" => l.endpoints.push(n + 1),
                _ => {}
            }
        }
        l
    }

    /// `providers "<id>" (line N)` for the i-th provider.
    pub(super) fn provider(&self, i: usize, id: &str) -> String {
        item("providers", self.providers.get(i), id)
    }

    /// `merchants "<id>" (line N)` for the i-th merchant.
    pub(super) fn merchant(&self, i: usize, id: &str) -> String {
        item("merchants", self.merchants.get(i), id)
    }

    /// `merchants.endpoints "<id>" (line N)` for the i-th endpoint of the file.
    pub(super) fn endpoint(&self, i: usize, id: &str) -> String {
        item("merchants.endpoints", self.endpoints.get(i), id)
    }
}

fn item(table: &str, line: Option<&usize>, id: &str) -> String {
    match line {
        Some(n) => format!("{table} {id:?} (line {n})"),
        // Written as an inline array rather than `[[…]]` headers.
        None => format!("{table} {id:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_i_th_header_of_each_table() {
        let text = "[server]\n[[providers]]\nid = \"a\"\n\n[[ providers ]] # b\nid = \"b\"\n\
                    [[merchants]]\nid = \"m\"\n[[merchants.endpoints]]\nid = \"e\"\n\
                    x = \"[[providers]]\"\n";
        let l = ItemLines::scan(text);
        assert_eq!(l.provider(0, "a"), "providers \"a\" (line 2)");
        assert_eq!(l.provider(1, "b"), "providers \"b\" (line 5)");
        assert_eq!(l.merchant(0, "m"), "merchants \"m\" (line 7)");
        assert_eq!(l.endpoint(0, "e"), "merchants.endpoints \"e\" (line 9)");
        assert_eq!(l.provider(2, "c"), "providers \"c\"");
    }
}
