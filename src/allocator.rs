//! Keep freed memory in the process for reuse, instead of handing it back to the kernel.
//!
//! Every op of a training step allocates its output, and many outputs are megabytes (the
//! attention weights of one layer are `B·H·T·T` floats, 8 MB in the benchmark). glibc's
//! `malloc` serves blocks that large with `mmap` and returns them with `munmap` or by trimming
//! the heap, so the next step faults the same pages in again and the kernel zeroes them: a
//! `perf` profile of a training step on Flex spent about 12% in page faults, page clearing and
//! unmapping. Raising the two thresholds keeps those blocks in the heap, where the next step
//! reuses them. Measured with `cargo run --release --example bench -- --only train`, alternating
//! runs with and without (`GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:
//! glibc.malloc.mmap_threshold=33554432` has the same effect): 6.3k, 6.7k, 5.9k tokens/s
//! without, 8.8k, 8.8k, 9.3k with. The cost is that the process keeps its peak heap size.
//!
//! Only glibc on Linux has these knobs; elsewhere [`keep_freed_memory`] does nothing.

/// Raise glibc's mmap and trim thresholds (32 MiB, glibc's largest mmap threshold, and 1 GiB)
/// so that freed tensor buffers stay in the heap for reuse. Call it once, early, from a
/// program that trains or runs the model many times; the examples do. Returns whether the
/// allocator took the settings.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; it is safe to call at any time,
        // from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
