//! What a value is at its top level, as its `Serialize` impl says: absent (`None`), an error (the
//! `Err` of a `Result`), or a value. Negative caching uses it (`EntryOptions::none_ttl`,
//! `EntryOptions::error_ttl`) without knowing the value's type: serde's own impls serialize `None`
//! with `serialize_none` and `Err(e)` as the newtype variant `Err` of the enum `Result`.
//!
//! Only the first call of the `Serialize` impl is looked at; nothing is allocated or written.

use serde::ser::{self, Impossible, Serialize};
use std::fmt;

/// The top-level shape of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `None` (or anything that serializes as none).
    Absent,
    /// `Err(_)` of a `Result`.
    Error,
    /// Anything else.
    Value,
}

/// The shape of `value`.
pub(crate) fn shape_of<T: Serialize + ?Sized>(value: &T) -> Shape {
    match value.serialize(Probe) {
        Ok(shape) | Err(Found(shape)) => shape,
    }
}

struct Probe;

/// The "error" that stops a probe once the shape is known (compound values).
#[derive(Debug)]
struct Found(Shape);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Found(Shape::Value)
    }
}

type Res = Result<Shape, Found>;
type Stop = Impossible<Shape, Found>;

fn value() -> Res {
    Ok(Shape::Value)
}

fn stop() -> Result<Stop, Found> {
    Err(Found(Shape::Value))
}

impl ser::Serializer for Probe {
    type Ok = Shape;
    type Error = Found;
    type SerializeSeq = Stop;
    type SerializeTuple = Stop;
    type SerializeTupleStruct = Stop;
    type SerializeTupleVariant = Stop;
    type SerializeMap = Stop;
    type SerializeStruct = Stop;
    type SerializeStructVariant = Stop;

    fn serialize_none(self) -> Res {
        Ok(Shape::Absent)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Res {
        if name == "Result" && variant == "Err" {
            Ok(Shape::Error)
        } else {
            value()
        }
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Res {
        value()
    }
    fn serialize_bool(self, _: bool) -> Res {
        value()
    }
    fn serialize_i8(self, _: i8) -> Res {
        value()
    }
    fn serialize_i16(self, _: i16) -> Res {
        value()
    }
    fn serialize_i32(self, _: i32) -> Res {
        value()
    }
    fn serialize_i64(self, _: i64) -> Res {
        value()
    }
    fn serialize_u8(self, _: u8) -> Res {
        value()
    }
    fn serialize_u16(self, _: u16) -> Res {
        value()
    }
    fn serialize_u32(self, _: u32) -> Res {
        value()
    }
    fn serialize_u64(self, _: u64) -> Res {
        value()
    }
    fn serialize_f32(self, _: f32) -> Res {
        value()
    }
    fn serialize_f64(self, _: f64) -> Res {
        value()
    }
    fn serialize_char(self, _: char) -> Res {
        value()
    }
    fn serialize_str(self, _: &str) -> Res {
        value()
    }
    fn serialize_bytes(self, _: &[u8]) -> Res {
        value()
    }
    fn serialize_unit(self) -> Res {
        value()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Res {
        value()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Res {
        value()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Res {
        // Transparent wrappers keep the shape of what they wrap.
        v.serialize(Probe)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Stop, Found> {
        stop()
    }
    fn serialize_tuple(self, _: usize) -> Result<Stop, Found> {
        stop()
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Stop, Found> {
        stop()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Stop, Found> {
        stop()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Stop, Found> {
        stop()
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Stop, Found> {
        stop()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Stop, Found> {
        stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct User {
        name: String,
    }

    #[test]
    fn none_and_err_are_told_apart_from_values_of_any_type() {
        assert_eq!(shape_of(&None::<User>), Shape::Absent);
        assert_eq!(shape_of(&Some(User { name: "a".into() })), Shape::Value);
        assert_eq!(shape_of(&Err::<u8, String>("down".into())), Shape::Error);
        assert_eq!(shape_of(&Ok::<u8, String>(1)), Shape::Value);
        assert_eq!(shape_of(&Ok::<Option<u8>, String>(None)), Shape::Value);
        assert_eq!(shape_of(&vec![1, 2]), Shape::Value);
        assert_eq!(shape_of(&User { name: "a".into() }), Shape::Value);
        assert_eq!(shape_of(&()), Shape::Value);
        assert_eq!(shape_of("text"), Shape::Value);
    }
}
