//! A small TwiML builder with correct XML escaping.
//!
//! Every TwiML document we send goes through [`Element`], so text from an LLM or a caller can never
//! break the XML, whatever it contains.

use std::fmt::Write as _;

/// The XML declaration that opens every TwiML document.
const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// One TwiML verb or noun with its attributes and children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Tag name, e.g. `Stream`.
    name: &'static str,
    /// Attributes in the order they were added.
    attributes: Vec<(&'static str, String)>,
    /// Child elements and text, in document order.
    children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// An element with no attributes or children.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds an attribute; the value is escaped when rendered.
    pub fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }

    /// Appends a child element.
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Appends text content; it is escaped when rendered.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    fn render_into(&self, out: &mut String) {
        let _ = write!(out, "<{}", self.name);
        for (name, value) in &self.attributes {
            let _ = write!(out, " {name}=\"");
            escape_into(value, out);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(element) => element.render_into(out),
                Node::Text(text) => escape_into(text, out),
            }
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

/// Renders a whole TwiML document: the declaration and a `<Response>` holding `verbs`.
pub fn response(verbs: impl IntoIterator<Item = Element>) -> String {
    let root = verbs
        .into_iter()
        .fold(Element::new("Response"), Element::child);
    let mut out = String::from(XML_DECLARATION);
    root.render_into(&mut out);
    out
}

/// Escapes the five XML special characters; control characters XML 1.0 forbids are dropped.
fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_connect_stream() {
        let doc = response([Element::new("Connect")
            .child(Element::new("Stream").attr("url", "wss://example.com/media"))]);
        assert_eq!(
            doc,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://example.com/media"/></Connect></Response>"#
        );
    }

    #[test]
    fn escapes_text_and_attributes() {
        let doc = response([Element::new("Say")
            .attr("voice", "a\"b<c>")
            .text("Fish & chips <b>'now'</b>\u{1}")]);
        assert!(doc.contains(r#"voice="a&quot;b&lt;c&gt;""#), "{doc}");
        assert!(
            doc.contains("Fish &amp; chips &lt;b&gt;&apos;now&apos;&lt;/b&gt;</Say>"),
            "{doc}"
        );
    }

    #[test]
    fn empty_response_is_self_closing() {
        assert_eq!(
            response([]),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
        );
    }
}
