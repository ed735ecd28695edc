//! Decompression bombs cost at most the bound: every allocation made while decoding is
//! counted (and capped: past the bound plus a small slack the allocator refuses, which
//! aborts this test) while tiny inputs that expand to 32 MiB are decoded against a 1 MiB
//! bound. One test function, so that nothing else allocates meanwhile.

use insync_log::compression::{compress, decompress};
use insync_log::{BatchError, Compression};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Error messages, codec tables on the heap and such: small and fixed.
const SLACK_BYTES: usize = 256 * 1024;

#[test]
fn bombs_allocate_at_most_the_bound() {
    let bound = 1024 * 1024;
    let zeros = vec![0u8; 32 * 1024 * 1024];
    let mut bombs: Vec<(Compression, Vec<u8>)> =
        [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
            .into_iter()
            .map(|codec| (codec, compress(codec, &zeros)))
            .collect();
    // zstd as Kafka's Java producer streams it: no content size in the frame header, so the
    // decoder cannot refuse up front and must stop at the bound.
    bombs.push((Compression::Zstd, zstd::stream::encode_all(&zeros[..], 3).unwrap()));
    assert!(matches!(zstd::zstd_safe::get_frame_content_size(&bombs[4].1), Ok(None)));
    // A raw snappy block whose header claims 4 GiB, and a zstd frame header claiming 1 TiB.
    bombs.push((Compression::Snappy, vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]));
    bombs.push((Compression::Zstd, [&[0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x50][..], &(1u64 << 40).to_le_bytes()].concat()));
    drop(zeros);

    for (codec, bomb) in &bombs {
        let live_before = ALLOCATOR.allocated();
        let total_before = ALLOCATOR.total_allocated();
        ALLOCATOR.set_limit(live_before + bound + SLACK_BYTES).unwrap();
        let result = decompress(*codec, bomb, bound);
        ALLOCATOR.set_limit(usize::MAX).unwrap();
        let total = ALLOCATOR.total_allocated() - total_before;
        assert_eq!(result, Err(BatchError::DecompressedTooLarge { codec: *codec, max_bytes: bound }), "{codec}");
        // Growth steps add up (the buffer doubles, or zstd tries 4x larger rounds), but never
        // to the 32 MiB the input expands to.
        assert!(total <= 2 * bound + SLACK_BYTES, "{codec}: {total} bytes allocated for a {}-byte bomb", bomb.len());
        println!("{codec}: a {}-byte bomb cost {total} bytes of allocations", bomb.len());
    }
}
