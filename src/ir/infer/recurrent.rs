//! Recurrent layers: LSTM, GRU and RNN (older PP-OCR recognizers use LSTM).
//! Y is `[seq, directions, batch, hidden]` and Y_h/Y_c `[directions, batch,
//! hidden]`, batch-first when `layout` is 1 (opset 14).

use super::context::{NodeView, OutputFacts};
use crate::ir::shape::{Dim, Shape};

/// LSTM, GRU, RNN.
pub(super) fn recurrent(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let directions = Dim::Known(if view.attr_string("direction").as_deref() == Some("bidirectional") { 2 } else { 1 });
    let batch_first = view.attr_int_or("layout", 0) == 1;
    // Hidden size: the attribute, else R's last dim ([directions, gates * hidden, hidden]).
    let hidden = match view.attr_int("hidden_size") {
        Some(size) if size > 0 => Dim::Known(size),
        _ => view.input_shape(2).filter(|r| r.rank() == 3).map_or(Dim::Unknown, |r| r.0[2].clone()),
    };
    let (sequence, batch) = match view.input_shape(0) {
        Some(x) if x.rank() == 3 => {
            if batch_first {
                (x.0[1].clone(), x.0[0].clone())
            } else {
                (x.0[0].clone(), x.0[1].clone())
            }
        }
        _ => (Dim::Unknown, Dim::Unknown),
    };
    let all = if batch_first {
        vec![batch.clone(), sequence, directions.clone(), hidden.clone()]
    } else {
        vec![sequence, directions.clone(), batch.clone(), hidden.clone()]
    };
    let last = if batch_first { vec![batch, directions, hidden] } else { vec![directions, batch, hidden] };
    let last = OutputFacts::new(dtype, Some(Shape(last)));
    vec![OutputFacts::new(dtype, Some(Shape(all))), last.clone(), last]
}
