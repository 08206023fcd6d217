//! Dimension arithmetic shared by the operator rules: multidirectional
//! broadcasting, products and sums of dimensions that may be symbolic, axis
//! normalization. Every function is total: what cannot be decided becomes
//! `Dim::Unknown`, never a guess.

use crate::ir::shape::{Dim, Shape};

/// The largest rank inference produces; anything larger is treated as unknown.
pub(super) const MAX_RANK: usize = 64;

/// Broadcasts two dimensions the numpy way. A known dimension other than 1
/// decides against a symbol (the symbol must be 1 or equal to it).
pub(super) fn broadcast_dim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(1), other) | (other, Dim::Known(1)) => other.clone(),
        (Dim::Known(x), Dim::Known(y)) => {
            if x == y {
                Dim::Known(*x)
            } else {
                Dim::Unknown
            }
        }
        (Dim::Known(x), _) | (_, Dim::Known(x)) => Dim::Known(*x),
        (Dim::Symbol(x), Dim::Symbol(y)) if x == y => Dim::Symbol(x.clone()),
        _ => Dim::Unknown,
    }
}

/// Multidirectional (numpy) broadcasting of several shapes, aligned at the right.
pub(super) fn broadcast_shapes<'a>(shapes: impl IntoIterator<Item = &'a Shape>) -> Shape {
    let mut result: Vec<Dim> = Vec::new();
    for shape in shapes {
        let rank = result.len().max(shape.rank());
        let mut merged = Vec::with_capacity(rank);
        for index in 0..rank {
            let from_result = aligned_dim(&result, rank, index);
            let from_shape = aligned_dim(&shape.0, rank, index);
            merged.push(broadcast_dim(&from_result, &from_shape));
        }
        result = merged;
    }
    Shape(result)
}

/// Dimension `index` of `dims` right-aligned in a shape of rank `rank`; 1 where `dims` is too short.
fn aligned_dim(dims: &[Dim], rank: usize, index: usize) -> Dim {
    let missing = rank - dims.len();
    if index < missing {
        Dim::Known(1)
    } else {
        dims[index - missing].clone()
    }
}

/// The product of dimensions: known when all are known; a symbol when exactly
/// one symbol is multiplied by ones; otherwise unknown.
pub(super) fn dim_product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
    let mut known: i64 = 1;
    let mut symbol: Option<&String> = None;
    let mut symbols = 0usize;
    let mut unknown = false;
    for dim in dims {
        match dim {
            Dim::Known(0) => return Dim::Known(0),
            Dim::Known(value) => match known.checked_mul(*value) {
                Some(product) => known = product,
                None => unknown = true,
            },
            Dim::Symbol(name) => {
                symbols += 1;
                symbol = Some(name);
            }
            Dim::Unknown => unknown = true,
        }
    }
    match (unknown, symbols, symbol) {
        (false, 0, _) => Dim::Known(known),
        (false, 1, Some(name)) if known == 1 => Dim::Symbol(name.clone()),
        _ => Dim::Unknown,
    }
}

/// The sum of dimensions: known when all are known; a symbol when exactly one
/// symbol is added to zeros; otherwise unknown.
pub(super) fn dim_sum<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
    let mut known: i64 = 0;
    let mut symbol: Option<&String> = None;
    let mut symbols = 0usize;
    for dim in dims {
        match dim {
            Dim::Known(value) => match known.checked_add(*value) {
                Some(sum) => known = sum,
                None => return Dim::Unknown,
            },
            Dim::Symbol(name) => {
                symbols += 1;
                symbol = Some(name);
            }
            Dim::Unknown => return Dim::Unknown,
        }
    }
    match (symbols, symbol) {
        (0, _) => Dim::Known(known),
        (1, Some(name)) if known == 0 => Dim::Symbol(name.clone()),
        _ => Dim::Unknown,
    }
}

/// A dimension plus a constant offset (padding, cropping); negative results are unknown.
pub(super) fn dim_plus(dim: &Dim, offset: i64) -> Dim {
    match dim {
        Dim::Known(value) => known_non_negative(value.checked_add(offset)),
        Dim::Symbol(_) if offset == 0 => dim.clone(),
        _ => Dim::Unknown,
    }
}

/// A dimension times a constant factor (tiling); negative results are unknown.
pub(super) fn dim_times(dim: &Dim, factor: i64) -> Dim {
    match dim {
        Dim::Known(value) => known_non_negative(value.checked_mul(factor)),
        Dim::Symbol(_) if factor == 1 => dim.clone(),
        _ if factor == 0 => Dim::Known(0),
        _ => Dim::Unknown,
    }
}

/// A dimension divided exactly by a constant divisor; unknown when it does not divide.
pub(super) fn dim_divided(dim: &Dim, divisor: i64) -> Dim {
    match dim {
        Dim::Known(value) if divisor > 0 && value % divisor == 0 => Dim::Known(value / divisor),
        Dim::Symbol(_) if divisor == 1 => dim.clone(),
        _ => Dim::Unknown,
    }
}

/// `Dim::Known` for a non-negative value, `Dim::Unknown` otherwise.
pub(super) fn known_non_negative(value: Option<i64>) -> Dim {
    match value {
        Some(value) if value >= 0 => Dim::Known(value),
        _ => Dim::Unknown,
    }
}

/// Of dimensions that must be equal (the non-axis dims of Concat inputs), the
/// most informative: a known one, else a shared symbol, else unknown.
pub(super) fn unify_dims<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
    let mut best = Dim::Unknown;
    for dim in dims {
        match (dim, &best) {
            (Dim::Known(_), _) => return dim.clone(),
            (Dim::Symbol(_), Dim::Unknown) => best = dim.clone(),
            _ => {}
        }
    }
    best
}

/// An axis in `[-rank, rank)` as an index, `None` when out of range.
pub(super) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    let axis = if axis < 0 { axis.checked_add(rank)? } else { axis };
    (0..rank).contains(&axis).then_some(axis as usize)
}

/// Axes normalized against `rank`, `None` when one is out of range or repeated.
pub(super) fn normalize_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    let mut normalized = Vec::with_capacity(axes.len());
    for &axis in axes {
        let axis = normalize_axis(axis, rank)?;
        if normalized.contains(&axis) {
            return None;
        }
        normalized.push(axis);
    }
    Some(normalized)
}

/// A shape of the given rank with every dimension unknown.
pub(super) fn unknown_shape(rank: usize) -> Shape {
    Shape(vec![Dim::Unknown; rank])
}

/// A dimension read from a computed value: non-negative numbers are known, symbols stay.
pub(super) fn dim_from_number(value: i64) -> Dim {
    known_non_negative(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &str) -> Dim {
        Dim::Symbol(name.to_string())
    }

    #[test]
    fn broadcasting_keeps_symbols_and_prefers_known() {
        let a = Shape(vec![sym("N"), Dim::Known(3), Dim::Known(1), Dim::Known(5)]);
        let b = Shape(vec![Dim::Known(4), Dim::Known(1)]);
        assert_eq!(broadcast_shapes([&a, &b]).to_string(), "[N,3,4,5]");
        let c = Shape(vec![Dim::Known(7), Dim::Known(1), Dim::Known(1), Dim::Known(1)]);
        assert_eq!(broadcast_shapes([&a, &c]).to_string(), "[7,3,1,5]");
        assert_eq!(broadcast_dim(&sym("N"), &sym("M")), Dim::Unknown);
        assert_eq!(broadcast_dim(&Dim::Known(2), &Dim::Known(3)), Dim::Unknown);
    }

    #[test]
    fn products_and_sums() {
        assert_eq!(dim_product(&[Dim::Known(3), Dim::Known(4)]), Dim::Known(12));
        assert_eq!(dim_product(&[sym("N"), Dim::Known(1)]), sym("N"));
        assert_eq!(dim_product(&[sym("N"), Dim::Known(2)]), Dim::Unknown);
        assert_eq!(dim_product(&[Dim::Known(i64::MAX), Dim::Known(2)]), Dim::Unknown);
        assert_eq!(dim_sum(&[sym("W"), Dim::Known(0)]), sym("W"));
        assert_eq!(dim_sum(&[Dim::Known(3), Dim::Known(4)]), Dim::Known(7));
        assert_eq!(normalize_axis(-1, 4), Some(3));
        assert_eq!(normalize_axis(4, 4), None);
        assert_eq!(normalize_axes(&[0, -4], 4), None);
    }
}
