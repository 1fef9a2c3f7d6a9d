//! Markdown (CommonMark with tables and YAML front matter) via pulldown-cmark.

use pulldown_cmark::{Event, HeadingLevel, MetadataBlockKind, Options, Parser, Tag, TagEnd};

use super::{MAX_NESTING, ParseError, ParsedDocument, SectionBuilder};

pub(super) fn parse(text: &str) -> Result<ParsedDocument, ParseError> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_TASKLISTS;
    let mut builder = SectionBuilder::default();
    let mut heading: Option<(u8, String)> = None;
    let mut code: Option<String> = None;
    let mut in_metadata = false;
    let mut front_matter_title = None;
    let mut depth = 0usize;

    for event in Parser::new_ext(text, options) {
        match &event {
            Event::Start(_) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ParseError::TooDeep {
                        format: "Markdown",
                        what: "blocks",
                        limit: MAX_NESTING,
                    });
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        match event {
            Event::Start(Tag::MetadataBlock(MetadataBlockKind::YamlStyle)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Text(t) if in_metadata => {
                front_matter_title = front_matter_title.or_else(|| yaml_title(&t));
            }
            Event::Start(Tag::Heading { level, .. }) => {
                builder.end_paragraph();
                heading = Some((heading_level(level), String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    builder.heading(level, &text);
                }
            }
            Event::Start(Tag::CodeBlock(_)) => code = Some(String::new()),
            Event::End(TagEnd::CodeBlock) => {
                if let Some(text) = code.take() {
                    builder.preformatted(&text);
                }
            }
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                if let Some((_, h)) = heading.as_mut() {
                    h.push_str(&t);
                } else if let Some(c) = code.as_mut() {
                    c.push_str(&t);
                } else {
                    builder.text(&t);
                }
            }
            Event::SoftBreak | Event::HardBreak => match heading.as_mut() {
                Some((_, h)) => h.push(' '),
                None => builder.text(" "),
            },
            Event::Start(Tag::Item) => {
                builder.end_paragraph();
                builder.text("• ");
            }
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::TableRow
                | TagEnd::TableHead
                | TagEnd::BlockQuote(_),
            ) => builder.end_paragraph(),
            Event::Start(Tag::Paragraph | Tag::Table(_) | Tag::BlockQuote(_)) => {}
            Event::End(TagEnd::TableCell) => builder.text(" | "),
            Event::TaskListMarker(done) => builder.text(if done { "[x] " } else { "[ ] " }),
            _ => {}
        }
    }
    if let Some(title) = front_matter_title {
        builder.set_title_if_missing(&title);
    }
    Ok(builder.finish())
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

fn yaml_title(block: &str) -> Option<String> {
    block.lines().find_map(|line| {
        let value = line.strip_prefix("title:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> ParsedDocument {
        parse(text).expect("parses")
    }

    #[test]
    fn nesting_deeper_than_the_bound_is_refused() {
        for deep in [">".repeat(100_000) + " quoted", "* ".repeat(20_000) + "item", "[".repeat(50_000)] {
            match parse(&deep) {
                Err(ParseError::TooDeep { format: "Markdown", .. }) => {}
                // Nesting the parser flattens (brackets are text) is fine as long as it returns.
                Ok(_) => {}
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        }
        let quotes = ">".repeat(100_000) + " quoted";
        assert!(matches!(parse(&quotes), Err(ParseError::TooDeep { .. })));
        assert!(parse_ok(&(">".repeat(20) + " fine")).sections[0].paragraphs[0].contains("fine"));
    }

    #[test]
    fn headings_lists_tables_and_code() {
        let doc = parse_ok(
            "# Employee handbook\n\nIntro text.\n\n## Leave\n\n- 28 days\n- carry over 5\n\n\
             ### Sick leave\n\n| Days | Paper |\n|---|---|\n| 3 | none |\n\n```\nvpn connect\n```\n",
        );
        assert_eq!(doc.title.as_deref(), Some("Employee handbook"));
        assert_eq!(doc.sections[0].heading_path, Vec::<String>::new());
        assert_eq!(doc.sections[0].paragraphs, ["Intro text."]);
        assert_eq!(doc.sections[1].heading_path, ["Leave"]);
        assert_eq!(doc.sections[1].paragraphs, ["• 28 days", "• carry over 5"]);
        assert_eq!(doc.sections[2].heading_path, ["Leave", "Sick leave"]);
        assert_eq!(doc.sections[2].paragraphs, ["Days | Paper", "3 | none", "vpn connect"]);
    }

    #[test]
    fn front_matter_title_is_used_when_there_is_no_h1() {
        let doc = parse_ok("---\ntitle: \"Отпуск\"\n---\n\n## Сроки\n\nЗаявление за две недели.\n");
        assert_eq!(doc.title.as_deref(), Some("Отпуск"));
        assert_eq!(doc.sections[0].heading_path, ["Сроки"]);
    }
}
