//! Where a convolution's kernel taps read its input: strides, dilations,
//! leading pads (explicit or `auto_pad`) and the output size per spatial axis.

use crate::ir::AttributeList;

/// Where a Conv's kernel taps read its input, one entry per spatial axis.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeometry {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub group: usize,
    /// Output positions per axis.
    pub output: Vec<usize>,
}

impl ConvGeometry {
    /// From a Conv's attributes (explicit pads or `auto_pad`), its input's
    /// spatial dims and its kernel's; `None` when they do not make a Conv.
    pub fn new(attrs: &(impl AttributeList + ?Sized), input: &[usize], kernel: &[usize]) -> Option<ConvGeometry> {
        let axes = input.len();
        if kernel.len() != axes {
            return None;
        }
        let per_axis = |name: &str, default: i64, len: usize| -> Option<Vec<usize>> {
            match attrs.attr_ints(name) {
                None | Some([]) => Some(vec![default as usize; len]),
                Some(v) if v.len() == len => v.iter().map(|&x| usize::try_from(x).ok()).collect(),
                Some(_) => None,
            }
        };
        let strides = per_axis("strides", 1, axes)?;
        let dilations = per_axis("dilations", 1, axes)?;
        let pads = per_axis("pads", 0, 2 * axes)?;
        if strides.contains(&0) || dilations.contains(&0) {
            return None;
        }
        let extent = |d: usize| Some(dilations[d] * kernel[d].checked_sub(1)? + 1);
        let (mut pads_begin, mut output) = (Vec::with_capacity(axes), Vec::with_capacity(axes));
        for d in 0..axes {
            let extent = extent(d)?;
            let (begin, end) = match attrs.attr_string("auto_pad").as_deref() {
                None | Some("NOTSET") | Some("") => (pads[d], pads[d + axes]),
                Some("VALID") => (0, 0),
                Some(same @ ("SAME_UPPER" | "SAME_LOWER")) => {
                    let out = input[d].div_ceil(strides[d]);
                    let total = ((out.checked_sub(1)?) * strides[d] + extent).saturating_sub(input[d]);
                    let small = total / 2;
                    if same == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    }
                }
                Some(_) => return None,
            };
            let padded = input[d] + begin + end;
            output.push(padded.checked_sub(extent)? / strides[d] + 1);
            pads_begin.push(begin);
        }
        let group = usize::try_from(attrs.attr_int("group").unwrap_or(1)).ok().filter(|&g| g > 0)?;
        Some(ConvGeometry { strides, dilations, pads_begin, group, output })
    }
}
