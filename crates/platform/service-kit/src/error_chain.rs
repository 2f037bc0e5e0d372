//! Errors on one line for logs, health reports and dead-letter reasons.

use std::error::Error;

/// `error` and its sources on one line, joined by `": "`. SDK errors keep the useful part (the
/// service's code and message, the socket error) in their sources, and some errors (sqlx's, the
/// SDK's) repeat their source's message in their own: a part already on the line is left out.
pub fn error_chain(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !line.contains(&cause_text) {
            line.push_str(": ");
            line.push_str(&cause_text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn every_source_is_on_the_line_once() {
        let socket = layer("connection refused", None);
        let repeating = layer("dispatch failure: connection refused", Some(socket));
        let call = layer("sqs:SendMessage failed", Some(repeating));
        assert_eq!(
            error_chain(&call),
            "sqs:SendMessage failed: dispatch failure: connection refused"
        );
        assert_eq!(error_chain(&layer("alone", None)), "alone");
    }
}
