//! Matrix products on strided views of plain `f32` slices, through the `gemm` crate that Flex
//! itself multiplies with.
//!
//! Calling it directly rather than through `Flex::float_matmul` lets the kernels multiply
//! views in place (a head's columns inside `[B, T, 3·D]`, a transposed weight), write into a
//! slice of a larger output, add into an output (the bias is preloaded), and allocate outputs
//! without first zero-filling them: Flex's matmul output is a zeroed buffer that is then
//! copied once more to align it, two passes over memory the product overwrites anyway.

/// A matrix inside a slice: element `(i, j)` is `data[offset + i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A `[rows, cols]` matrix stored row by row from the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, [rows, cols], [cols, 1])
    }

    /// A `[rows, cols]` matrix at `offset` with the given row and column strides.
    ///
    /// # Panics
    /// If an element of the view lies outside `data`.
    pub fn strided(data: &'a [f32], offset: usize, shape: [usize; 2], strides: [usize; 2]) -> Self {
        let [rows, cols] = shape;
        let [row_stride, col_stride] = strides;
        if rows > 0 && cols > 0 {
            let last = offset + (rows - 1) * row_stride + (cols - 1) * col_stride;
            assert!(
                last < data.len(),
                "a [{rows}, {cols}] view at offset {offset} with strides [{row_stride}, \
                 {col_stride}] reaches element {last} of a slice of {}",
                data.len()
            );
        }
        Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
}

/// Where a product is written: a `[rows, cols]` block of `data` at `offset`, rows `row_stride`
/// apart, columns contiguous.
pub struct Output<'a> {
    data: &'a mut [f32],
    offset: usize,
    row_stride: usize,
}

impl<'a> Output<'a> {
    /// The whole of `data`, row by row.
    pub fn row_major(data: &'a mut [f32]) -> Self {
        Self::strided(data, 0, 0)
    }

    /// A block at `offset` with rows `row_stride` apart (0: as wide as the product).
    pub fn strided(data: &'a mut [f32], offset: usize, row_stride: usize) -> Self {
        Self {
            data,
            offset,
            row_stride,
        }
    }
}

/// Products at least this large (`m·n·k`) use every core; smaller ones run on the calling
/// thread, which is cheaper than the hand-off (and the caller may already be parallel).
const PARALLEL_FROM: usize = 1 << 21;

/// `out = a·b`, or `out += a·b` with `accumulate`.
///
/// # Shapes
/// - a: `[m, k]`, b: `[k, n]`, out: a `[m, n]` block
///
/// # Panics
/// If the shapes do not chain or the output block does not fit in its slice.
pub fn matmul_into(out: Output<'_>, a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
    let ([m, k], [k2, n]) = (a.shape(), b.shape());
    assert_eq!(k, k2, "inner sizes differ: [{m}, {k}] · [{k2}, {n}]");
    let row_stride = if out.row_stride == 0 {
        n
    } else {
        out.row_stride
    };
    if m == 0 || n == 0 {
        return;
    }
    let last = out.offset + (m - 1) * row_stride + n - 1;
    assert!(
        last < out.data.len() && row_stride >= n,
        "a [{m}, {n}] output at offset {} with row stride {row_stride} does not fit a slice of {}",
        out.offset,
        out.data.len()
    );
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                let start = out.offset + row * row_stride;
                out.data[start..start + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the output block lies inside `out.data` (checked above), which is borrowed
    // mutably, so neither view aliases it.
    unsafe {
        product(
            out.data.as_mut_ptr().add(out.offset),
            row_stride,
            a,
            b,
            accumulate,
        )
    }
}

/// `a·b` in a new row-major buffer, allocated without zero-filling it first: the product
/// writes every element without reading any.
///
/// # Shapes
/// - a: `[m, k]`, b: `[k, n]`, output `[m, n]`
pub fn matmul(a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
    let ([m, k], [k2, n]) = (a.shape(), b.shape());
    assert_eq!(k, k2, "inner sizes differ: [{m}, {k}] · [{k2}, {n}]");
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: the buffer has room for the `[m, n]` result; with `accumulate` off gemm only
    // writes it, and every element is written, so it is initialised when its length is set.
    unsafe {
        product(out.as_mut_ptr(), n, a, b, false);
        out.set_len(m * n);
    }
    out
}

/// The call into `gemm`.
///
/// # Safety
/// `out` must be valid for writes (and reads, with `accumulate`) of a `[m, n]` block with
/// rows `row_stride ≥ n` apart, not overlapping `a` or `b`; `k > 0`.
unsafe fn product(
    out: *mut f32,
    row_stride: usize,
    a: Matrix<'_>,
    b: Matrix<'_>,
    accumulate: bool,
) {
    let ([m, k], [_, n]) = (a.shape(), b.shape());
    let parallelism = if m * n * k >= PARALLEL_FROM {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element of `a` and `b` lies inside its slice (checked when the views were
    // made); the caller vouches for the output.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            row_stride as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
