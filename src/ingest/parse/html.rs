//! HTML via scraper (html5ever): headings h1–h6 build the heading path, block elements end
//! paragraphs, table cells are separated by `|`, and scripts, styles and navigation are skipped.

use ego_tree::NodeRef;
use ego_tree::iter::Edge;
use scraper::{Html, Node, Selector};

use super::{MAX_NESTING, ParseError, ParsedDocument, SectionBuilder, collapse_whitespace};

const SKIPPED: &[&str] =
    &["script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "button", "form"];
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "thead",
    "tbody",
    "tr",
    "blockquote",
    "figure",
    "figcaption",
    "address",
    "hr",
    "br",
    "details",
    "summary",
];

pub(super) fn parse(text: &str) -> Result<ParsedDocument, ParseError> {
    let html = Html::parse_document(text);
    // The walk below recurses once per element level: measure the depth first, without
    // recursion, and refuse a tree deeper than the bound.
    if nesting_depth(&html) > MAX_NESTING {
        return Err(ParseError::TooDeep { format: "HTML", what: "elements", limit: MAX_NESTING });
    }
    let mut builder = SectionBuilder::default();
    let title = Selector::parse("title").expect("a valid selector");
    if let Some(title) = html.select(&title).next() {
        builder.set_title_if_missing(&title.text().collect::<String>());
    }
    let mut walker = Walker { builder };
    walker.walk(html.tree.root());
    Ok(walker.builder.finish())
}

fn nesting_depth(html: &Html) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for edge in html.tree.root().traverse() {
        match edge {
            Edge::Open(_) => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Edge::Close(_) => depth -= 1,
        }
    }
    deepest
}

struct Walker {
    builder: SectionBuilder,
}

impl Walker {
    fn walk(&mut self, node: NodeRef<'_, Node>) {
        match node.value() {
            Node::Text(text) => self.builder.text(text),
            Node::Element(element) => {
                let name = element.name();
                if SKIPPED.contains(&name) {
                    return;
                }
                if let Some(level) = heading_level(name) {
                    let text = collapse_whitespace(&text_of(node));
                    // The page's <title> usually repeats its h1: keep only one of them.
                    if level == 1 && self.builder.title() == Some(text.as_str()) {
                        self.builder.end_paragraph();
                    } else {
                        self.builder.heading(level, &text);
                    }
                    return;
                }
                if name == "pre" {
                    self.builder.preformatted(&text_of(node));
                    return;
                }
                let block = BLOCKS.contains(&name);
                if block {
                    self.builder.end_paragraph();
                }
                if name == "li" {
                    self.builder.text("• ");
                }
                for child in node.children() {
                    self.walk(child);
                }
                match name {
                    "td" | "th" => self.builder.text(" | "),
                    _ if block => self.builder.end_paragraph(),
                    _ => {}
                }
            }
            Node::Document | Node::Fragment => {
                for child in node.children() {
                    self.walk(child);
                }
            }
            _ => {}
        }
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn text_of(node: NodeRef<'_, Node>) -> String {
    node.descendants().filter_map(|n| n.value().as_text().map(|t| t.to_string())).collect::<Vec<_>>().join("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> ParsedDocument {
        parse(text).expect("parses")
    }

    #[test]
    fn nested_tables_deeper_than_the_bound_are_refused_not_a_stack_overflow() {
        // 5,000 nested tables (about 160 KB) overflowed the main thread's stack and aborted
        // `sputnik import` and `sputnik serve`.
        let deep = format!("{}x{}", "<table><tr><td>".repeat(5_000), "</td></tr></table>".repeat(5_000));
        let refused = parse(&deep).unwrap_err();
        assert!(matches!(refused, ParseError::TooDeep { format: "HTML", .. }), "{refused}");
        let divs = format!("{}x{}", "<div>".repeat(50_000), "</div>".repeat(50_000));
        assert!(matches!(parse(&divs), Err(ParseError::TooDeep { .. })));
        // Nesting a real page uses stays well inside.
        let fine = format!("{}<p>Deep but fine.</p>{}", "<div>".repeat(100), "</div>".repeat(100));
        assert_eq!(parse_ok(&fine).sections[0].paragraphs, ["Deep but fine."]);
    }

    #[test]
    fn headings_paragraphs_tables_and_no_scripts() {
        let doc = parse_ok(
            "<html><head><title>IT guide</title><style>p{}</style></head><body>\
             <nav>Home | About</nav><h1>IT guide</h1><p>Welcome&nbsp;aboard.</p>\
             <h2>VPN</h2><p>Install the <b>client</b>.</p><script>alert(1)</script>\
             <table><tr><th>Port</th><th>Use</th></tr><tr><td>443</td><td>VPN</td></tr></table>\
             <h3>Codes</h3><ul><li>SEC-101</li><li>SEC-102</li></ul></body></html>",
        );
        assert_eq!(doc.title.as_deref(), Some("IT guide"));
        assert_eq!(doc.sections[0].heading_path, Vec::<String>::new());
        assert_eq!(doc.sections[0].paragraphs, ["Welcome aboard."]);
        assert_eq!(doc.sections[1].heading_path, ["VPN"]);
        assert_eq!(doc.sections[1].paragraphs, ["Install the client.", "Port | Use", "443 | VPN"]);
        assert_eq!(doc.sections[2].heading_path, ["VPN", "Codes"]);
        assert_eq!(doc.sections[2].paragraphs, ["• SEC-101", "• SEC-102"]);
    }
}
