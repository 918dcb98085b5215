//! Bead descriptions as Markdown, made safe: raw HTML is shown as text (never passed through),
//! and a link or image whose scheme is not http(s)/mailto (or a relative path) loses its target.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// The description as HTML that is safe to put in a page unescaped.
pub(crate) fn render(source: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(source, options).map(|event| match event {
        // Raw HTML becomes text, which push_html escapes.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            Event::Start(Tag::Link { link_type, dest_url: safe_url(dest_url), title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            Event::Start(Tag::Image { link_type, dest_url: safe_url(dest_url), title, id })
        }
        other => other,
    });
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// The URL when its scheme is safe, else `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim().to_ascii_lowercase();
    let scheme = lower.split_once(':').map(|(s, _)| s).filter(|s| !s.contains(['/', '?', '#']));
    match scheme {
        None | Some("http" | "https" | "mailto") => url,
        Some(_) => CowStr::Borrowed("#"),
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_renders_and_html_is_escaped() {
        let html = render("# Title\n\nSome *emphasis* and `code`.\n\n<script>alert(1)</script>\n\n<b onclick=x>hi</b>");
        assert!(html.contains("<h1>Title</h1>") && html.contains("<em>emphasis</em>"), "{html}");
        assert!(html.contains("<code>code</code>"), "{html}");
        assert!(!html.contains("<script") && html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<b ") && html.contains("&lt;b onclick=x&gt;"), "{html}");
    }

    #[test]
    fn unsafe_link_schemes_are_dropped() {
        let html =
            render("[a](javascript:alert(1)) [b](https://example.com/x) [c](../rel) [d](JaVaScRiPt:x) ![i](data:x)");
        assert!(!html.to_lowercase().contains("javascript:") && !html.contains("data:x"), "{html}");
        assert!(html.contains("href=\"https://example.com/x\"") && html.contains("href=\"../rel\""), "{html}");
    }
}
