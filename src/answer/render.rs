//! A model's Markdown as the HTML subset Telegram accepts (`<b>`, `<i>`, `<s>`, `<code>`,
//! `<pre>`, `<a href>`), parsed with pulldown-cmark: every piece of text is escaped, tags are
//! always balanced, links keep only http(s) targets, raw HTML in the answer is shown as text.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::i18n::escape_html;

/// Renders `markdown` (possibly cut off mid-way while it streams) to Telegram HTML.
pub fn to_telegram_html(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + 32);
    // Links whose target was dropped close without </a>.
    let mut open_links: Vec<bool> = Vec::new();
    let mut list_depth = 0usize;
    let mut ordered: Vec<Option<u64>> = Vec::new();
    for event in Parser::new_ext(markdown, Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Text(text) => out.push_str(&escape_html(&text)),
            Event::Code(code) => {
                out.push_str("<code>");
                out.push_str(&escape_html(&code));
                out.push_str("</code>");
            }
            // Raw HTML from the model is not trusted: shown as typed.
            Event::Html(html) | Event::InlineHtml(html) => out.push_str(&escape_html(&html)),
            Event::SoftBreak => out.push('\n'),
            Event::HardBreak => out.push('\n'),
            Event::Rule => out.push_str("\n——\n"),
            Event::Start(tag) => match tag {
                Tag::Strong | Tag::Heading { .. } => out.push_str("<b>"),
                Tag::Emphasis => out.push_str("<i>"),
                Tag::Strikethrough => out.push_str("<s>"),
                Tag::CodeBlock(_) => out.push_str("<pre>"),
                Tag::Link { dest_url, .. } => {
                    let safe = dest_url.starts_with("https://") || dest_url.starts_with("http://");
                    if safe {
                        out.push_str(&format!("<a href=\"{}\">", escape_html(&dest_url)));
                    }
                    open_links.push(safe);
                }
                Tag::List(start) => {
                    list_depth += 1;
                    ordered.push(start);
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                }
                Tag::Item => {
                    out.push_str(&"  ".repeat(list_depth.saturating_sub(1)));
                    match ordered.last_mut() {
                        Some(Some(n)) => {
                            out.push_str(&format!("{n}. "));
                            *n += 1;
                        }
                        _ => out.push_str("• "),
                    }
                }
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Strong => out.push_str("</b>"),
                TagEnd::Heading(_) => out.push_str("</b>\n"),
                TagEnd::Emphasis => out.push_str("</i>"),
                TagEnd::Strikethrough => out.push_str("</s>"),
                TagEnd::CodeBlock => out.push_str("</pre>\n"),
                TagEnd::Link if open_links.pop() == Some(true) => out.push_str("</a>"),
                TagEnd::Paragraph => out.push_str("\n\n"),
                TagEnd::Item if !out.ends_with('\n') => out.push('\n'),
                TagEnd::List(_) => {
                    list_depth = list_depth.saturating_sub(1);
                    ordered.pop();
                    out.push('\n');
                }
                _ => {}
            },
            Event::TaskListMarker(done) => out.push_str(if done { "☑ " } else { "☐ " }),
            _ => {}
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags Telegram accepts, balanced.
    fn balanced(html: &str) -> bool {
        let mut stack = Vec::new();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else { return false };
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.to_owned()) {
                    return false;
                }
            } else {
                let name = tag.split_whitespace().next().unwrap_or_default().to_owned();
                if !["b", "i", "s", "code", "pre", "a"].contains(&name.as_str()) {
                    return false;
                }
                stack.push(name);
            }
        }
        stack.is_empty()
    }

    #[test]
    fn markdown_becomes_safe_telegram_html() {
        let html = to_telegram_html(
            "## Leave\n\n**Ten days** paid [1], _not_ more.\n\n- one <script>alert(1)</script>\n- two & `x<y`\n\n\
             [click](javascript:alert(1)) or [docs](https://example.com/a?b=1&c=2)\n\n**unclosed",
        );
        assert!(balanced(&html), "{html}");
        assert!(html.contains("<b>Leave</b>"), "{html}");
        assert!(html.contains("<b>Ten days</b> paid [1], <i>not</i> more."), "{html}");
        assert!(html.contains("• one &lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("• two &amp; <code>x&lt;y</code>"), "{html}");
        assert!(!html.contains("javascript"), "{html}");
        assert!(html.contains("<a href=\"https://example.com/a?b=1&amp;c=2\">docs</a>"), "{html}");
        assert!(html.ends_with("**unclosed"), "{html}");
    }

    #[test]
    fn half_streamed_markdown_stays_balanced() {
        let full = "**Bold** text with `code` and a [link](https://e.com) and *more*";
        for end in (0..=full.len()).filter(|&i| full.is_char_boundary(i)) {
            let html = to_telegram_html(&full[..end]);
            assert!(balanced(&html), "{end}: {html}");
        }
    }
}
