//! An estimate of the heap memory a value owns, found by walking it with a serde `Serializer`:
//! what the L1 weigher charges for a value, so that the L1 byte budget bounds the memory the
//! process really holds (a Kubernetes memory limit sized from `CACHE_L1_MAX_BYTES` is a real
//! limit), not the size of the value's encoding, which can be several times smaller than the
//! typed value (a 770-byte MessagePack `ApiResponse` of 12 items owns ~3.4 KiB of malloc chunks).
//!
//! # The model
//!
//! Every cached type implements `Serialize` (it is written to L2), and its `Serialize` impl shows
//! what the value holds: strings, byte buffers, sequences, maps, structs, options, enums, numbers.
//! [`heap_bytes`] walks that and adds up, without allocating:
//!
//! - a string (`serialize_str`) is one allocation of its length (a `String`); a byte buffer
//!   (`serialize_bytes`) one of its length (a `Vec<u8>`); empty ones allocate nothing;
//! - a sequence is one allocation of *element stride × element count* (a `Vec`), plus each
//!   element's own heap; the stride is the largest inline size seen among its elements (they are
//!   of one type, so a `Some` tells the size of the `None`s), rounded up to their alignment;
//! - a map is one hash-table allocation, modelled on `std`'s hashbrown: a power-of-two number of
//!   buckets for a load factor of at most 7/8 (4 or 8 buckets below 8 entries), each bucket holding
//!   a key and a value, plus one control byte per bucket and 16 trailing ones; plus each key's and
//!   value's own heap;
//! - structs, tuples, options, newtypes and enum variants allocate nothing themselves: their heap
//!   is their fields' heap. Their *inline* size (what they occupy inside a `Vec` or map slot) is the
//!   sum of their fields' inline sizes rounded up to the largest field alignment (fields of a
//!   struct, a tuple or an array are measured exactly with `size_of_val`, as `derive(Serialize)`
//!   hands each field over by reference; elements of sequences and maps are handed over as
//!   references to references, so their inline size is inferred from what they serialize as:
//!   `String`/`Vec` 24 bytes, a map 48, numbers their width, an option or enum one tag more unless
//!   the payload has a niche for it);
//! - every allocation is rounded up the way glibc's malloc hands memory out on 64-bit Linux
//!   ([`alloc_bytes`]): the request plus an 8-byte chunk header, in 16-byte granules, 32 bytes at
//!   least. That is what a process's RSS and a container's memory limit see: an 85-byte string
//!   takes a 96-byte chunk, a 5-byte one 32 bytes.
//!
//! The value's own inline size (`size_of::<T>()`) is not part of [`heap_bytes`]: the L1 entry adds
//! it with the `Arc` that holds the value.
//!
//! # What serde cannot show
//!
//! - **Capacity beyond length.** A `Vec` or `String` grown by pushing may hold up to twice its
//!   length; only the length is serialized. Values decoded from L2 are allocated at their exact
//!   length (serde's `String` is copied from the input, and its `Vec` reserves the encoded length,
//!   up to 1 MiB); values built by `collect` from a sized iterator are exact, and `format!`
//!   reserves up to twice its literal text (the compare bench's values: ~5% more than estimated).
//!   A value with much spare capacity is underestimated.
//! - **Boxes and sharing.** `Box<T>` serializes as `T`: its allocation is not seen (the boxed
//!   value's own heap is). An `Arc`/`Rc` (serde's `rc` feature) is counted in full at each place it
//!   is serialized, though shared: an overestimate.
//! - **Skipped fields** (`#[serde(skip)]`, `skip_serializing_if`) are invisible: their heap is not
//!   counted; at the top level the value's inline size still is (it is `size_of::<T>()`).
//! - **Custom `Serialize` impls** are counted by what they emit: a type that serializes as a
//!   string but holds none (a date via `serialize_str`, a UUID as 16 bytes) is counted as one
//!   allocation (an overestimate); one that emits less than it holds is underestimated. Values
//!   serialized through `collect_str` (`chrono` dates, `Display` types) are taken as inline data
//!   without heap. Sets serialize like sequences and are counted as a `Vec` (their hash table is
//!   about twice that); a `BTreeMap` is counted as a hash table (its nodes hold 6 to 11 entries of
//!   11 slots: the same order of size).
//!
//! The estimate is still sound for a byte budget: the data that dominates a cached value's heap
//! (string contents, element arrays, table slots) is what serde must show to serialize it, and
//! the allocator rounding that dominates for small allocations is modelled; what is not seen is
//! bounded (a factor of two for spare capacity, one allocation per `Box`) and known to the
//! developer who caches such values. The compare bench (`cargo bench -p cache-benches --bench
//! compare`, section "L1 memory") checks the whole L1 against a counting allocator.
//!
//! # Failures
//!
//! The walk never panics (sizes add up saturating) and never allocates. A `Serialize` impl that
//! returns an error stops the walk: [`heap_bytes`] then returns the heap of what was walked before
//! the error (a lower bound; the value cannot be written to L2 either, which the cache logs).

use serde::ser::{self, Serialize};
use std::collections::HashMap;
use std::mem::{align_of, size_of};

/// The glibc malloc chunk header on 64-bit targets.
const CHUNK_HEADER: usize = 8;
/// glibc's allocation granule (`MALLOC_ALIGNMENT`) on 64-bit targets.
const GRANULE: usize = 16;
/// glibc's smallest chunk (`MINSIZE`) on 64-bit targets.
const MIN_CHUNK: usize = 32;
/// hashbrown's control-byte group width (SSE2), the trailing control bytes of every table.
const GROUP_WIDTH: usize = 16;
/// What a `None` whose `Some` was never seen occupies: an `Option<u64>`.
const NONE_SHAPE: Shape = Shape {
    size: size_of::<Option<u64>>(),
    align: align_of::<Option<u64>>(),
    niche: false,
    guess: true,
};
/// What a value serialized through `collect_str` occupies inline (unknown: most such types are
/// dates, addresses and ids of 4 to 32 bytes).
const DISPLAY_SHAPE: Shape = Shape {
    size: 16,
    align: 8,
    niche: false,
    guess: true,
};

/// The bytes glibc malloc takes for a request of `n` bytes (its chunk size); 0 for 0 (Rust does
/// not allocate empty buffers).
pub(crate) fn alloc_bytes(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    n.saturating_add(CHUNK_HEADER)
        .div_ceil(GRANULE)
        .saturating_mul(GRANULE)
        .max(MIN_CHUNK)
}

/// The estimated heap `value` owns, in malloc chunk bytes, its own inline size excluded (see the
/// module documentation for what is counted).
pub(crate) fn heap_bytes<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut heap = 0;
    // On an error, `heap` holds what was walked before it (documented above).
    let _ = value.serialize(Walk { heap: &mut heap });
    heap
}

/// How a value sits inline in its parent (a `Vec` slot, a map bucket, a struct field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    size: usize,
    align: usize,
    /// Whether it has invalid bit patterns (a non-null pointer, a `bool`, a `char`) in which an
    /// enclosing `Option` can store its tag for free.
    niche: bool,
    /// Not seen, guessed (a `None`): any shape seen for the same type replaces it.
    guess: bool,
}

impl Shape {
    const EMPTY: Shape = Shape {
        size: 0,
        align: 1,
        niche: false,
        guess: false,
    };

    const fn of<T>(niche: bool) -> Shape {
        Shape {
            size: size_of::<T>(),
            align: align_of::<T>(),
            niche,
            guess: false,
        }
    }

    /// The size of one slot in an array of such values.
    fn stride(self) -> usize {
        round_up(self.size, self.align)
    }

    /// With an enum tag (an `Option`, an enum variant with data): in the niche if there is one.
    fn tagged(self) -> Shape {
        if self.niche {
            Shape {
                niche: false,
                ..self
            }
        } else {
            let align = self.align.max(1);
            Shape {
                size: round_up(self.size.saturating_add(1), align),
                align,
                niche: false,
                guess: self.guess,
            }
        }
    }

    /// The larger of two shapes of one type (elements of one sequence); a guess gives way to
    /// what was seen.
    fn max(self, other: Shape) -> Shape {
        match (self.guess, other.guess) {
            (true, false) => other,
            (false, true) => self,
            _ => Shape {
                size: self.size.max(other.size),
                align: self.align.max(other.align),
                niche: self.niche || other.niche,
                guess: self.guess,
            },
        }
    }
}

fn round_up(n: usize, align: usize) -> usize {
    n.div_ceil(align.max(1)).saturating_mul(align.max(1))
}

/// hashbrown's table allocation for `n` entries of `slot` (key and value together).
fn table_bytes(n: usize, slot: Shape) -> usize {
    if n == 0 {
        return 0;
    }
    let buckets = if n < 4 {
        4
    } else if n < 8 {
        8
    } else {
        (n.saturating_mul(8) / 7)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
    };
    let data = round_up(
        buckets.saturating_mul(slot.stride()),
        slot.align.max(GROUP_WIDTH),
    );
    alloc_bytes(data.saturating_add(buckets).saturating_add(GROUP_WIDTH))
}

/// The walk's only error: a `Serialize` impl reported one.
#[derive(Debug, thiserror::Error)]
#[error("the value's Serialize impl failed")]
struct Unserializable;

impl ser::Error for Unserializable {
    fn custom<M: std::fmt::Display>(_msg: M) -> Self {
        Unserializable
    }
}

type Res = Result<Shape, Unserializable>;

/// The serializer: adds each allocation to `heap`, returns the value's inline shape.
struct Walk<'a> {
    heap: &'a mut usize,
}

impl Walk<'_> {
    fn alloc(&mut self, n: usize) {
        *self.heap = self.heap.saturating_add(alloc_bytes(n));
    }

    fn reborrow(&mut self) -> Walk<'_> {
        Walk { heap: self.heap }
    }
}

macro_rules! primitives {
    ($($method:ident($t:ty, $niche:expr)),* $(,)?) => {
        $(
            fn $method(self, _v: $t) -> Res {
                Ok(Shape::of::<$t>($niche))
            }
        )*
    };
}

impl<'a> ser::Serializer for Walk<'a> {
    type Ok = Shape;
    type Error = Unserializable;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Fields<'a>;
    type SerializeTupleStruct = Fields<'a>;
    type SerializeTupleVariant = Fields<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    primitives! {
        serialize_bool(bool, true),
        serialize_i8(i8, false),
        serialize_i16(i16, false),
        serialize_i32(i32, false),
        serialize_i64(i64, false),
        serialize_i128(i128, false),
        serialize_u8(u8, false),
        serialize_u16(u16, false),
        serialize_u32(u32, false),
        serialize_u64(u64, false),
        serialize_u128(u128, false),
        serialize_f32(f32, false),
        serialize_f64(f64, false),
        serialize_char(char, true),
    }

    /// Compact forms where a type has two (`std::net` addresses as bytes, not text): closer to
    /// what they hold in memory.
    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_str(mut self, v: &str) -> Res {
        self.alloc(v.len());
        Ok(Shape::of::<String>(true))
    }

    fn serialize_bytes(mut self, v: &[u8]) -> Res {
        self.alloc(v.len());
        Ok(Shape::of::<Vec<u8>>(true))
    }

    fn collect_str<D: std::fmt::Display + ?Sized>(self, _v: &D) -> Res {
        Ok(DISPLAY_SHAPE)
    }

    fn serialize_none(self) -> Res {
        Ok(NONE_SHAPE)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Res {
        Ok(value.serialize(self)?.tagged())
    }

    fn serialize_unit(self) -> Res {
        Ok(Shape::EMPTY)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Res {
        Ok(Shape::EMPTY)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Res {
        // A fieldless enum: one tag byte, with unused values for an `Option`'s tag.
        Ok(Shape::of::<u8>(true))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Res {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Res {
        Ok(value.serialize(self)?.tagged())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Unserializable> {
        Ok(Seq {
            walk: self,
            count: 0,
            element: Shape::EMPTY,
        })
    }

    fn serialize_tuple(self, _len: usize) -> Result<Fields<'a>, Unserializable> {
        Ok(Fields::new(self, false))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _len: usize,
    ) -> Result<Fields<'a>, Unserializable> {
        Ok(Fields::new(self, false))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _len: usize,
    ) -> Result<Fields<'a>, Unserializable> {
        Ok(Fields::new(self, true))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>, Unserializable> {
        Ok(Map {
            walk: self,
            count: 0,
            key: Shape::EMPTY,
            value: Shape::EMPTY,
        })
    }

    fn serialize_struct(self, _: &'static str, _len: usize) -> Result<Fields<'a>, Unserializable> {
        Ok(Fields::new(self, false))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _len: usize,
    ) -> Result<Fields<'a>, Unserializable> {
        Ok(Fields::new(self, true))
    }
}

/// A sequence: one buffer of `count` slots of the widest element seen.
struct Seq<'a> {
    walk: Walk<'a>,
    count: usize,
    element: Shape,
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = Shape;
    type Error = Unserializable;

    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), Unserializable> {
        // `value` is usually a `&&Element` (serde's `collect_seq`): its size says nothing, its
        // serialization does.
        let shape = value.serialize(self.walk.reborrow())?;
        self.element = self.element.max(shape);
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    fn end(mut self) -> Res {
        let buffer = self.count.saturating_mul(self.element.stride());
        self.walk.alloc(buffer);
        Ok(Shape::of::<Vec<u8>>(true))
    }
}

/// A map: one hash table of `count` buckets of the widest key and value seen.
struct Map<'a> {
    walk: Walk<'a>,
    count: usize,
    key: Shape,
    value: Shape,
}

impl ser::SerializeMap for Map<'_> {
    type Ok = Shape;
    type Error = Unserializable;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unserializable> {
        let shape = key.serialize(self.walk.reborrow())?;
        self.key = self.key.max(shape);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unserializable> {
        let shape = value.serialize(self.walk.reborrow())?;
        self.value = self.value.max(shape);
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    fn end(self) -> Res {
        let align = self.key.align.max(self.value.align);
        let slot = Shape {
            size: round_up(self.key.stride().saturating_add(self.value.size), align),
            align,
            niche: false,
            guess: false,
        };
        let walk = self.walk;
        *walk.heap = walk.heap.saturating_add(table_bytes(self.count, slot));
        Ok(Shape::of::<HashMap<u8, u8>>(true))
    }
}

/// The fields of a struct, tuple or enum variant: inline in their parent, no allocation.
struct Fields<'a> {
    walk: Walk<'a>,
    shape: Shape,
    /// An enum variant (a tag besides the fields).
    variant: bool,
}

impl<'a> Fields<'a> {
    fn new(walk: Walk<'a>, variant: bool) -> Self {
        Fields {
            walk,
            shape: Shape::EMPTY,
            variant,
        }
    }

    fn field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unserializable> {
        let walked = value.serialize(self.walk.reborrow())?;
        // `derive(Serialize)` hands each field by reference: its size is exact. A field with
        // `serialize_with` comes wrapped in a reference-holding struct whose size is not the
        // field's: the walked shape is then the better guess, so take the larger (unless the
        // walk only guessed).
        let exact = Shape {
            size: std::mem::size_of_val(value),
            align: std::mem::align_of_val(value),
            niche: walked.niche,
            guess: false,
        };
        let s = if walked.guess {
            exact
        } else {
            exact.max(walked)
        };
        self.shape = Shape {
            size: self.shape.size.saturating_add(s.size),
            align: self.shape.align.max(s.align),
            niche: self.shape.niche || s.niche,
            guess: false,
        };
        Ok(())
    }

    fn finish(self) -> Res {
        let shape = Shape {
            size: self.shape.stride(),
            ..self.shape
        };
        Ok(if self.variant { shape.tagged() } else { shape })
    }
}

macro_rules! fields {
    ($($trait:ident { $method:ident($($key:ident: $kt:ty),*) })*) => {
        $(
            impl ser::$trait for Fields<'_> {
                type Ok = Shape;
                type Error = Unserializable;

                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $($key: $kt,)*
                    value: &T,
                ) -> Result<(), Unserializable> {
                    $(let _ = $key;)*
                    self.field(value)
                }

                fn end(self) -> Res {
                    self.finish()
                }
            }
        )*
    };
}

fields! {
    SerializeTuple { serialize_element() }
    SerializeTupleStruct { serialize_field() }
    SerializeTupleVariant { serialize_field() }
    SerializeStruct { serialize_field(key: &'static str) }
    SerializeStructVariant { serialize_field(key: &'static str) }
}

#[cfg(test)]
mod tests;
