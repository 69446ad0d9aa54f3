//! Spreading keys over a fixed number of shards, the same way in every process.

/// The shard (in `0..shards`) of `key`: FNV-1a 64, stable across processes, builds and Rust
/// versions (unlike `DefaultHasher`, which is seeded). Rows written under one assignment must
/// be found under it later, so this function never changes.
pub fn shard_of(key: &str, shards: u32) -> i32 {
    let shards = u64::from(shards.max(1));
    (fnv1a_64(key.as_bytes()) % shards) as i32
}

/// FNV-1a, 64 bits.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_64() {
        // Published test vectors of FNV-1a, 64 bits.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
