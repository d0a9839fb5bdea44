//! What one queue message carries: one command, or several when the write API groups the commands that
//! arrive while earlier publishes await their acks (group commit). One compact JSON document per line,
//! so a single command is exactly the old one-command message and old messages still decode.

use bytes::Bytes;
use domain::CommandEnvelope;

/// One message's payload for these commands, in order.
pub fn encode_batch(envelopes: &[CommandEnvelope]) -> Bytes {
    let encoded: Vec<Vec<u8>> = envelopes.iter().map(CommandEnvelope::encode).collect();
    join_encoded(encoded.iter().map(Vec::as_slice))
}

/// Join already-encoded commands (compact JSON never holds a raw newline) into one payload.
pub(crate) fn join_encoded<'a>(parts: impl Iterator<Item = &'a [u8]>) -> Bytes {
    let mut out = Vec::new();
    for part in parts {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(part);
    }
    Bytes::from(out)
}

/// The commands of one message, in order; an error names the first line that does not decode.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<CommandEnvelope>, String> {
    payload
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            CommandEnvelope::decode(line)
                .map_err(|e| if i == 0 { e } else { format!("command {} of the message: {e}", i + 1) })
        })
        .collect()
}

/// How many commands a payload carries, without decoding it (for sizing fetches).
pub fn command_count(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Command, CommandId, PostBody, PostId, UserId};

    fn post(body: &str) -> CommandEnvelope {
        CommandEnvelope::new(
            CommandId::new_v7(),
            UserId::parse("alice").unwrap(),
            Command::PublishPost {
                post_id: PostId(uuid::Uuid::now_v7()),
                body: PostBody::parse(body.to_owned()).unwrap(),
                reply_to: None,
            },
        )
    }

    #[test]
    fn a_batch_round_trips_in_order_even_with_newlines_in_bodies() {
        let batch = vec![post("one\ntwo"), post("three"), post("{\"not\": \"a line\"}\n")];
        let payload = encode_batch(&batch);
        assert_eq!(command_count(&payload), 3);
        assert_eq!(decode_batch(&payload).unwrap(), batch);
    }

    #[test]
    fn a_single_command_is_the_one_command_message() {
        let one = post("hello");
        assert_eq!(encode_batch(std::slice::from_ref(&one)).as_ref(), one.encode().as_slice());
        assert_eq!(decode_batch(&one.encode()).unwrap(), vec![one]);
    }

    #[test]
    fn a_bad_line_fails_the_message_and_is_named() {
        let good = post("fine").encode();
        let mut payload = good.clone();
        payload.extend_from_slice(b"\n{\"schema_version\": 1}");
        let err = decode_batch(&payload).unwrap_err();
        assert!(err.starts_with("command 2 of the message: undecodable command"), "{err}");
        assert!(decode_batch(b"").is_err(), "an empty message is not a command");
    }
}
