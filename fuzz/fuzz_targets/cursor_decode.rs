//! Cursors from clients: decoding never panics, a decoded position re-encodes to a
//! cursor that decodes the same, and a cursor belongs to one list only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgd::domain::cursor::{decode, encode, CursorKind};

const KINDS: [CursorKind; 6] = [
    CursorKind::Organizations,
    CursorKind::Events,
    CursorKind::Members,
    CursorKind::Feed,
    CursorKind::Webhooks,
    CursorKind::Deliveries,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded: Vec<_> = KINDS.iter().map(|k| decode(*k, text)).collect();
    assert!(decoded.iter().filter(|d| d.is_some()).count() <= 1);
    for (kind, position) in KINDS.iter().zip(&decoded) {
        if let Some(position) = position {
            let cursor = encode(*kind, position);
            assert_eq!(decode(*kind, &cursor).as_ref(), Some(position));
        }
    }
    // Whatever a client sends as a position round-trips through a cursor.
    let cursor = encode(CursorKind::Organizations, text);
    if cursor.len() <= 512 {
        assert_eq!(
            decode(CursorKind::Organizations, &cursor).as_deref(),
            Some(text)
        );
    }
});
