//! Server-sent events (`text/event-stream`), as OpenAI and Anthropic stream.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` field (empty when absent).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental parser: feed bytes, take complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// A fresh parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns events completed by them.
    pub fn push(&mut self, data: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data || !self.cur.event.is_empty() {
                    out.push(std::mem::take(&mut self.cur));
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (&line[..], ""),
            };
            match field {
                "event" => self.cur.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }

    /// Flush a final event not followed by a blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let mut evs = self.push(&rest);
            evs.extend(self.push(b"\n\n"));
            return evs.pop();
        }
        if self.has_data {
            self.has_data = false;
            return Some(std::mem::take(&mut self.cur));
        }
        None
    }
}

/// Encode `data: <json>\n\n`.
pub fn data_event(json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(json.len() + 8);
    v.extend_from_slice(b"data: ");
    v.extend_from_slice(json);
    v.extend_from_slice(b"\n\n");
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_openai_and_anthropic_styles() {
        let mut p = SseParser::new();
        let mut evs = p.push(b"data: {\"a\":1}\n\nevent: message_start\r\ndata: {\"b\"");
        evs.extend(p.push(b":2}\r\n\r\n: comment\n\ndata: [DONE]\n\n"));
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].data, "{\"a\":1}");
        assert_eq!(evs[1].event, "message_start");
        assert_eq!(evs[1].data, "{\"b\":2}");
        assert_eq!(evs[2].data, "[DONE]");
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut p = SseParser::new();
            let _ = p.push(&data);
            let _ = p.finish();
        }
    }
}
