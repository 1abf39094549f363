//! THCS v1 envelope properties: round trip at every level, and corruption never goes
//! unnoticed or panics.

use houndpool_protocol::envelope::{self, HEADER_LEN};
use houndpool_protocol::ProtocolError;
use proptest::prelude::*;

/// Evidence that is sometimes compressible (repeated fragments) and sometimes random.
fn evidence() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64 * 1024),
        (
            proptest::collection::vec(any::<u8>(), 1..64),
            0usize..(64 * 1024 / 8)
        )
            .prop_map(|(frag, reps)| {
                let mut v = frag.repeat(reps.max(1));
                v.truncate(64 * 1024);
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_at_any_level(data in evidence(), level in 0u32..=12) {
        let mut env = Vec::new();
        let header = envelope::encode_into(&data, level, &mut env).unwrap();
        prop_assert_eq!(header.original_size as usize, data.len());
        prop_assert_eq!(header.compressed_size as usize, env.len() - HEADER_LEN);
        prop_assert_eq!(envelope::verify(&env).unwrap(), header);
        let mut out = vec![0xEE; 3];
        let decoded = envelope::decode_into(&env, data.len(), &mut out).unwrap();
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(&out, &data);
        // One byte less of allowance is refused up front.
        if !data.is_empty() {
            let refused = matches!(
                envelope::decode(&env, data.len() - 1),
                Err(ProtocolError::EnvelopeOutputLimit { .. })
            );
            prop_assert!(refused);
        }
    }

    #[test]
    fn any_single_byte_change_is_detected(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut env = envelope::encode(&data, 6).unwrap();
        let at = pos.index(env.len());
        env[at] ^= xor;
        // A changed size field may still parse; everything else must fail somewhere, and
        // nothing may decode to different content.
        if let Ok(out) = envelope::decode(&env, 1 << 20) {
            prop_assert!(false, "corruption at {} decoded to {} bytes", at, out.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = envelope::parse_header(&bytes);
        let _ = envelope::verify(&bytes);
        let _ = envelope::decode(&bytes, 1 << 20);
        // And with a valid header prefix, so the checks past the magic are reached.
        let mut env = envelope::encode(b"prefix", 6).unwrap();
        env.truncate(HEADER_LEN);
        env.extend_from_slice(&bytes);
        let _ = envelope::decode(&env, 1 << 20);
    }
}
