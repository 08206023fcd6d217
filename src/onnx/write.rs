//! Writing a model: streamed straight to a temporary file beside the target
//! (never building the whole encoding in memory), then renamed into place, so
//! a failure leaves no partial output. (No fsync: the rename protects against
//! errors, not against power loss, as with other model writers.) Large tensors go to a `.data` file when
//! the caller asks, when the input had external data, or when the model would
//! exceed protobuf's 2 GiB limit.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::buf::UninitSlice;
use bytes::BufMut;
use prost::Message;

use super::external::ExternalRef;
use super::proto::{tensor_proto::DataLocation, ModelProto, TensorProto};
use super::read::is_stdio;
use super::tensors::for_each_tensor_mut;
use super::OnnxError;
use crate::ir::tensor::raw_bytes;

/// The largest message protobuf implementations accept.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// When to store tensors in an external data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExternalData {
    /// When the input had external data, or the model would not fit in one protobuf.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never; fail if the model does not fit in one protobuf.
    Never,
}

/// How to write a model.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub external: ExternalData,
    /// Tensors smaller than this many bytes stay inside the model file.
    pub external_threshold: u64,
    /// Whether the model was read with external data (for `ExternalData::Auto`).
    pub source_had_external_data: bool,
    /// Largest model file allowed; protobuf's 2 GiB limit unless a test lowers it.
    pub size_limit: u64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            external: ExternalData::Auto,
            external_threshold: 1024,
            source_had_external_data: false,
            size_limit: PROTOBUF_LIMIT,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub model_bytes: u64,
    /// The external data file and its size, if one was written.
    pub external: Option<(PathBuf, u64)>,
}

/// Writes a model to a path, or to stdout when the path is `-`.
pub fn write_model(mut model: ModelProto, path: &Path, options: &WriteOptions) -> Result<Written, OnnxError> {
    let too_large = model.encoded_len() as u64 > options.size_limit;
    let external = match options.external {
        ExternalData::Always => true,
        ExternalData::Never => false,
        ExternalData::Auto => too_large || options.source_had_external_data,
    };
    if is_stdio(path) {
        if external || too_large {
            return Err(OnnxError::TooLarge {
                path: path.to_path_buf(),
                reason: "this model needs an external data file, which cannot go to stdout; give an output path".into(),
            });
        }
        let stdout = std::io::stdout();
        let model_bytes = stream_message(&model, stdout.lock()).map_err(|source| write_error(path, source))?;
        return Ok(Written { model_bytes, external: None });
    }
    let write_error = |source| write_error(path, source);
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the output path names no file"))
    })?;

    let mut data_file = None;
    if external {
        let location = format!("{}.data", file_name.to_string_lossy());
        let temp = tempfile::Builder::new().prefix(".pare-").tempfile_in(&folder).map_err(write_error)?;
        let size =
            store_externally(&mut model, &location, options.external_threshold, temp.as_file()).map_err(write_error)?;
        data_file = Some((temp, folder.join(&location), size));
    }
    if model.encoded_len() as u64 > options.size_limit {
        return Err(OnnxError::TooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "the model is {} bytes, over the {}-byte limit of one protobuf; write it with --external-data",
                model.encoded_len(),
                options.size_limit
            ),
        });
    }
    let temp = tempfile::Builder::new().prefix(".pare-").tempfile_in(&folder).map_err(write_error)?;
    let model_bytes = stream_message(&model, temp.as_file()).map_err(write_error)?;
    let external = match data_file {
        Some((data_temp, data_path, size)) => {
            data_temp.persist(&data_path).map_err(|e| write_error(e.error))?;
            Some((data_path, size))
        }
        None => None,
    };
    temp.persist(path).map_err(|e| write_error(e.error))?;
    Ok(Written { model_bytes, external })
}

fn write_error(path: &Path, source: std::io::Error) -> OnnxError {
    OnnxError::Write { path: path.to_path_buf(), source }
}

/// Moves every tensor of at least `threshold` bytes into `file`, pointing the
/// tensor at `location`. Returns the data file's size.
fn store_externally(
    model: &mut ModelProto,
    location: &str,
    threshold: u64,
    file: &std::fs::File,
) -> std::io::Result<u64> {
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    for_each_tensor_mut(model, &mut |tensor: &mut TensorProto| -> std::io::Result<()> {
        let Some(raw) = raw_bytes(tensor) else { return Ok(()) };
        if (raw.len() as u64) < threshold.max(1) {
            return Ok(());
        }
        // Large tensors start on a page boundary so runtimes can map them.
        let alignment = if raw.len() >= 1 << 20 { 4096 } else { 64 };
        let padding = offset.next_multiple_of(alignment) - offset;
        writer.write_all(&vec![0u8; padding as usize])?;
        offset += padding;
        writer.write_all(&raw)?;
        let reference = ExternalRef { location: location.to_string(), offset, length: Some(raw.len() as u64) };
        offset += raw.len() as u64;
        tensor.raw_data = None;
        tensor.float_data.clear();
        tensor.int32_data.clear();
        tensor.int64_data.clear();
        tensor.double_data.clear();
        tensor.uint64_data.clear();
        tensor.external_data = reference.entries();
        tensor.data_location = Some(DataLocation::External as i32);
        Ok(())
    })?;
    writer.flush()?;
    Ok(offset)
}

/// Encodes a message into a writer through a fixed-size buffer; returns the
/// number of bytes written.
fn stream_message(message: &impl Message, writer: impl Write) -> std::io::Result<u64> {
    let mut sink = StreamingSink { writer, buffer: Vec::with_capacity(SINK_CAPACITY), written: 0, error: None };
    message.encode_raw(&mut sink);
    sink.flush_buffer();
    if let Some(error) = sink.error.take() {
        return Err(error);
    }
    sink.writer.flush()?;
    Ok(sink.written)
}

const SINK_CAPACITY: usize = 1 << 20;

/// A `BufMut` that forwards to a writer whenever its buffer fills; large
/// slices (tensor data) go to the writer directly. I/O errors are kept and
/// reported when encoding ends, since `BufMut` cannot return them.
struct StreamingSink<W: Write> {
    writer: W,
    buffer: Vec<u8>,
    written: u64,
    error: Option<std::io::Error>,
}

impl<W: Write> StreamingSink<W> {
    fn flush_buffer(&mut self) {
        if !self.buffer.is_empty() {
            self.write_through(None);
        }
    }

    /// Writes the buffer, then `extra` if given.
    fn write_through(&mut self, extra: Option<&[u8]>) {
        if self.error.is_none() {
            let result = self.writer.write_all(&self.buffer).and_then(|_| match extra {
                Some(slice) => self.writer.write_all(slice),
                None => Ok(()),
            });
            if let Err(error) = result {
                self.error = Some(error);
            }
        }
        self.written += (self.buffer.len() + extra.map_or(0, <[u8]>::len)) as u64;
        self.buffer.clear();
    }
}

// SAFETY: `chunk_mut` hands out the Vec's spare capacity, which always has at
// least one byte because the buffer is flushed whenever it is full, and
// `advance_mut` only extends the length over bytes the caller initialized.
unsafe impl<W: Write> BufMut for StreamingSink<W> {
    fn remaining_mut(&self) -> usize {
        usize::MAX - self.written as usize - self.buffer.len()
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        let length = self.buffer.len() + count;
        assert!(length <= self.buffer.capacity(), "advanced past the written bytes");
        unsafe { self.buffer.set_len(length) };
        if self.buffer.len() == self.buffer.capacity() {
            self.flush_buffer();
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buffer.len() == self.buffer.capacity() {
            self.flush_buffer();
        }
        UninitSlice::uninit(self.buffer.spare_capacity_mut())
    }

    fn put_slice(&mut self, slice: &[u8]) {
        if slice.len() > SINK_CAPACITY / 2 {
            self.write_through(Some(slice));
        } else {
            if self.buffer.len() + slice.len() > self.buffer.capacity() {
                self.flush_buffer();
            }
            self.buffer.extend_from_slice(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_encoding_equals_in_memory_encoding() {
        let big = crate::ir::tensor::from_f32("w", &[300_000], &vec![0.25; 300_000]);
        let small = crate::ir::tensor::from_i64("s", &[3], &[1, 2, 3]);
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(super::super::proto::GraphProto {
                initializer: vec![small.clone(), big, small],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut streamed = Vec::new();
        let written = stream_message(&model, &mut streamed).unwrap();
        assert_eq!(written as usize, streamed.len());
        assert_eq!(streamed, model.encode_to_vec());
    }
}
