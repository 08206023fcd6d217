//! Shared scaffolding of pare's fuzz targets: [`target!`] turns one of
//! `pare::fuzz_targets`' byte-level entry points into a libFuzzer target that
//! runs under `pare::fuzz_targets::BoundedAllocator`.

/// A libFuzzer target calling `$entry(bytes)`; refusals (`Err`) are expected,
/// panics and aborts are the bugs.
#[macro_export]
macro_rules! target {
    ($entry:path) => {
        #[global_allocator]
        static ALLOCATOR: pare::fuzz_targets::BoundedAllocator = pare::fuzz_targets::BoundedAllocator;

        libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
            let _ = $entry(bytes);
        });
    };
}
