//! Log lines with ANSI colours as HTML: the escape sequences are parsed with `anstyle-parse`
//! and the text comes out escaped, in `<span>`s whose classes the stylesheet colours (no
//! `style=` attributes: the dashboard's CSP forbids them). Each line is rendered on its own,
//! every span closed at its end, so a line streamed later looks the same as on the page.
//!
//! Classes: `a-b` bold, `a-d` dim, `a-i` italic, `a-u` underline, `a-f0`…`a-f15` the
//! foreground and `a-g0`…`a-g15` the background of the 16 terminal colours (256-colour and
//! true-colour codes take the nearest of them). Other sequences (cursor moves, titles) are
//! dropped; a carriage return followed by more text starts the line's text again, as a
//! progress bar redrawn in place ends up on a terminal.

use std::fmt::Write as _;

use anstyle_parse::{DefaultCharAccumulator, Params, Parser, Perform};
use maud::{Markup, PreEscaped};

/// What a run of text looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    fg: Option<u8>,
    bg: Option<u8>,
}

impl Style {
    fn classes(&self) -> String {
        let mut out = String::new();
        let mut add = |class: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(class);
        };
        if self.bold {
            add("a-b");
        }
        if self.dim {
            add("a-d");
        }
        if self.italic {
            add("a-i");
        }
        if self.underline {
            add("a-u");
        }
        if let Some(fg) = self.fg {
            add(&format!("a-f{fg}"));
        }
        if let Some(bg) = self.bg {
            add(&format!("a-g{bg}"));
        }
        out
    }
}

/// Collects one line's text and styles as the parser hands them over.
#[derive(Default)]
struct Line {
    style: Style,
    /// Finished runs: (style, text).
    runs: Vec<(Style, String)>,
    /// A carriage return came: the next text starts the line again.
    returned: bool,
}

impl Line {
    fn push(&mut self, c: char) {
        if self.returned {
            self.runs.clear();
            self.returned = false;
        }
        match self.runs.last_mut() {
            Some((style, text)) if *style == self.style => text.push(c),
            _ => self.runs.push((self.style, c.to_string())),
        }
    }

    fn sgr(&mut self, params: &Params) {
        // Each item is a parameter with its colon-separated subparameters (`38:5:196`);
        // the semicolon form (`38;5;196`) spreads the same numbers over items.
        let mut codes: Vec<&[u16]> = params.iter().collect();
        if codes.is_empty() {
            codes.push(&[0]);
        }
        let mut i = 0;
        while i < codes.len() {
            let code = codes[i];
            match code[0] {
                0 => self.style = Style::default(),
                1 => self.style.bold = true,
                2 => self.style.dim = true,
                3 => self.style.italic = true,
                4 => self.style.underline = true,
                22 => {
                    self.style.bold = false;
                    self.style.dim = false;
                }
                23 => self.style.italic = false,
                24 => self.style.underline = false,
                n @ 30..=37 => self.style.fg = Some((n - 30) as u8),
                39 => self.style.fg = None,
                n @ 40..=47 => self.style.bg = Some((n - 40) as u8),
                49 => self.style.bg = None,
                n @ 90..=97 => self.style.fg = Some((n - 90 + 8) as u8),
                n @ 100..=107 => self.style.bg = Some((n - 100 + 8) as u8),
                n @ (38 | 48) => {
                    let (colour, used) = if code.len() > 1 {
                        (extended(&code[1..]), 0)
                    } else {
                        let rest: Vec<u16> = codes[i + 1..].iter().map(|c| c[0]).collect();
                        let colour = extended(&rest);
                        let used = match rest.first() {
                            Some(5) => 2,
                            Some(2) => 4,
                            _ => 0,
                        };
                        (colour, used)
                    };
                    if n == 38 {
                        self.style.fg = colour;
                    } else {
                        self.style.bg = colour;
                    }
                    i += used;
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn html(&self) -> String {
        let mut out = String::new();
        for (style, text) in &self.runs {
            let classes = style.classes();
            if classes.is_empty() {
                escape_into(&mut out, text);
            } else {
                let _ = write!(out, r#"<span class="{classes}">"#);
                escape_into(&mut out, text);
                out.push_str("</span>");
            }
        }
        out
    }
}

impl Perform for Line {
    fn print(&mut self, c: char) {
        self.push(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\t' => self.push('\t'),
            b'\r' => self.returned = true,
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: u8) {
        if action == b'm' && intermediates.is_empty() && !ignore {
            self.sgr(params);
        }
    }
}

/// `5;n` (256 colours) or `2;r;g;b` (true colour), as the nearest of the 16.
fn extended(rest: &[u16]) -> Option<u8> {
    match rest {
        [5, n, ..] => Some(from_256(*n)),
        [2, r, g, b, ..] => Some(nearest(*r, *g, *b)),
        _ => None,
    }
}

/// The xterm palette's colour `n`, as the nearest of the 16.
fn from_256(n: u16) -> u8 {
    match n {
        0..=15 => n as u8,
        16..=231 => {
            let n = n - 16;
            let level = |v: u16| if v == 0 { 0 } else { 55 + v * 40 };
            nearest(level(n / 36), level((n / 6) % 6), level(n % 6))
        }
        232..=255 => {
            let grey = 8 + (n - 232) * 10;
            nearest(grey, grey, grey)
        }
        _ => 7,
    }
}

/// The nearest of the 16 terminal colours (xterm's values) to an RGB colour.
fn nearest(r: u16, g: u16, b: u16) -> u8 {
    const PALETTE: [(i32, i32, i32); 16] = [
        (0, 0, 0),
        (205, 0, 0),
        (0, 205, 0),
        (205, 205, 0),
        (0, 0, 238),
        (205, 0, 205),
        (0, 205, 205),
        (229, 229, 229),
        (127, 127, 127),
        (255, 0, 0),
        (0, 255, 0),
        (255, 255, 0),
        (92, 92, 255),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
    ];
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let mut best = 0;
    let mut best_distance = i32::MAX;
    for (i, (pr, pg, pb)) in PALETTE.iter().enumerate() {
        let distance = (r - pr).pow(2) + (g - pg).pow(2) + (b - pb).pow(2);
        if distance < best_distance {
            best = i as u8;
            best_distance = distance;
        }
    }
    best
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// One log line as escaped HTML, its colours as classes.
pub fn line_html(line: &str) -> Markup {
    let mut parser = Parser::<DefaultCharAccumulator>::new();
    let mut out = Line::default();
    for byte in line.bytes() {
        parser.advance(&mut out, byte);
    }
    PreEscaped(out.html())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(line: &str) -> String {
        line_html(line).into_string()
    }

    #[test]
    fn plain_text_is_escaped() {
        assert_eq!(
            html(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn colours_become_classes_and_spans_close_at_the_end_of_the_line() {
        assert_eq!(
            html("\x1b[1;31merror:\x1b[0m <bad>"),
            r#"<span class="a-b a-f1">error:</span> &lt;bad&gt;"#
        );
        assert_eq!(
            html("\x1b[32mok"),
            r#"<span class="a-f2">ok</span>"#,
            "an unclosed colour is closed at the end of the line"
        );
        assert_eq!(
            html("\x1b[92;44mbright\x1b[39m bg\x1b[49m none"),
            r#"<span class="a-f10 a-g4">bright</span><span class="a-g4"> bg</span> none"#
        );
        assert_eq!(
            html("\x1b[4munder\x1b[24m"),
            r#"<span class="a-u">under</span>"#
        );
        assert_eq!(html("\x1b[mreset"), "reset");
    }

    #[test]
    fn extended_colours_take_the_nearest_of_the_sixteen() {
        assert_eq!(
            html("\x1b[38;5;196mred"),
            r#"<span class="a-f9">red</span>"#
        );
        assert_eq!(
            html("\x1b[38;5;3mthree"),
            r#"<span class="a-f3">three</span>"#
        );
        assert_eq!(
            html("\x1b[38:5:21mblue"),
            r#"<span class="a-f4">blue</span>"#
        );
        assert_eq!(
            html("\x1b[48;2;0;200;0;1mgreen bold"),
            r#"<span class="a-b a-g2">green bold</span>"#
        );
        assert_eq!(
            html("\x1b[38;5;231mwhite"),
            r#"<span class="a-f15">white</span>"#
        );
    }

    #[test]
    fn other_sequences_and_controls_are_dropped() {
        assert_eq!(html("a\x1b[2Kb\x1b]0;title\x07c\x08d"), "abcd");
        assert_eq!(
            html("\x1b[31m<\x1b[1A>"),
            r#"<span class="a-f1">&lt;&gt;</span>"#
        );
        assert_eq!(html("tab\there"), "tab\there");
    }

    #[test]
    fn a_carriage_return_starts_the_line_again() {
        assert_eq!(html("10%\r50%\r100% done"), "100% done");
        assert_eq!(html("windows line\r"), "windows line");
    }

    #[test]
    fn unicode_passes_through() {
        assert_eq!(
            html("\x1b[33m✓ déployé\x1b[0m"),
            r#"<span class="a-f3">✓ déployé</span>"#
        );
    }
}
