use super::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[test]
fn allocations_round_up_to_glibc_chunks() {
    assert_eq!(alloc_bytes(0), 0);
    assert_eq!(alloc_bytes(1), 32);
    assert_eq!(alloc_bytes(24), 32);
    assert_eq!(alloc_bytes(25), 48);
    assert_eq!(alloc_bytes(85), 96);
    assert_eq!(alloc_bytes(6144), 6160);
    assert_eq!(alloc_bytes(usize::MAX), usize::MAX);
}

#[test]
fn a_string_is_one_allocation_of_its_length() {
    assert_eq!(heap_bytes(&String::new()), 0);
    assert_eq!(heap_bytes("abc"), 32);
    assert_eq!(heap_bytes(&"x".repeat(85)), 96);
    assert_eq!(heap_bytes(&"x".repeat(1000)), alloc_bytes(1000));
}

#[test]
fn numbers_own_no_heap() {
    assert_eq!(heap_bytes(&7u64), 0);
    assert_eq!(heap_bytes(&1.5f32), 0);
    assert_eq!(heap_bytes(&(1u8, 'c', true)), 0);
    assert_eq!(heap_bytes(&None::<String>), 0);
}

#[test]
fn a_vec_is_one_buffer_of_its_elements_inline_sizes() {
    let embedding = vec![0.5f32; 1536];
    assert_eq!(heap_bytes(&embedding), alloc_bytes(1536 * 4));
    assert_eq!(heap_bytes(&vec![1u64; 10]), alloc_bytes(80));
    assert_eq!(heap_bytes(&vec![0u8; 100]), alloc_bytes(100));
    assert_eq!(heap_bytes(&Vec::<u64>::new()), 0);
    // Strings: the buffer of `String`s plus each string's own allocation.
    let names = vec!["ab".to_owned(), "c".repeat(40)];
    assert_eq!(heap_bytes(&names), alloc_bytes(48) + 32 + alloc_bytes(40));
}

#[test]
fn elements_take_their_real_inline_size_with_padding() {
    #[derive(Serialize)]
    struct Point {
        x: u64,
        y: u8,
    }
    assert_eq!(size_of::<Point>(), 16);
    let v: Vec<Point> = (0..10).map(|i| Point { x: i, y: 1 }).collect();
    assert_eq!(heap_bytes(&v), alloc_bytes(10 * 16));
    // Tuples as elements.
    let pairs = vec![(1u32, 2u16); 8];
    assert_eq!(size_of::<(u32, u16)>(), 8);
    assert_eq!(heap_bytes(&pairs), alloc_bytes(64));
}

#[test]
fn options_in_a_vec_take_their_tag_or_their_niche() {
    assert_eq!(size_of::<Option<u64>>(), 16);
    assert_eq!(heap_bytes(&vec![Some(1u64); 4]), alloc_bytes(64));
    // Some and None of one type: the `Some` tells the slot size.
    assert_eq!(heap_bytes(&vec![None, Some(1u32)]), alloc_bytes(16));
    // A String's pointer holds the `None`: no tag.
    let v = vec![Some("abc".to_owned()), None];
    assert_eq!(size_of::<Option<String>>(), 24);
    assert_eq!(heap_bytes(&v), alloc_bytes(48) + 32);
}

#[test]
fn struct_fields_are_measured_exactly() {
    #[derive(Serialize)]
    struct Row {
        id: u64,
        note: Option<u64>,
        flag: bool,
    }
    let rows = vec![Row {
        id: 1,
        note: None,
        flag: true,
    }];
    // The `None` field is measured exactly through the struct (16), not guessed.
    assert_eq!(size_of::<Row>(), 32);
    assert_eq!(heap_bytes(&rows), alloc_bytes(32));
}

/// The compare bench's 770-byte `ApiResponse`, shape for shape.
#[test]
fn a_nested_response_counts_every_allocation() {
    #[derive(Serialize)]
    struct Item {
        name: String,
        score: f64,
        tags: Vec<String>,
    }
    #[derive(Serialize)]
    struct Response {
        id: u64,
        status: String,
        items: Vec<Item>,
    }
    let r = Response {
        id: 7,
        status: "ok".into(),
        items: (0..12)
            .map(|i| Item {
                name: format!("item-7-{i}-lorem-ipsum"),
                score: 1.5,
                tags: vec!["alpha".into(), "beta".into(), format!("t{i}")],
            })
            .collect(),
    };
    let mut expected = alloc_bytes(2); // status
    expected += alloc_bytes(12 * size_of::<Item>()); // the items buffer
    for it in &r.items {
        expected += alloc_bytes(it.name.len());
        expected += alloc_bytes(3 * size_of::<String>());
        expected += it.tags.iter().map(|t| alloc_bytes(t.len())).sum::<usize>();
    }
    assert_eq!(size_of::<Item>(), 56);
    assert_eq!(heap_bytes(&r), expected);
}

#[test]
fn a_map_is_a_hash_table_plus_its_keys_and_values() {
    let mut m = HashMap::new();
    for i in 0..100u64 {
        m.insert(format!("key-{i:03}"), i);
    }
    // 100 entries: 128 buckets of (String, u64) = 32 bytes, 128 + 16 control bytes.
    let table = alloc_bytes(128 * 32 + 128 + 16);
    let keys = 100 * alloc_bytes(7);
    assert_eq!(heap_bytes(&m), table + keys);
    // Small maps: 4 buckets at least.
    let one: BTreeMap<u32, u32> = [(1, 2)].into();
    assert_eq!(heap_bytes(&one), alloc_bytes(4 * 8 + 4 + 16));
    assert_eq!(heap_bytes(&HashMap::<u32, u32>::new()), 0);
}

#[test]
fn enums_count_their_payloads() {
    #[derive(Serialize)]
    enum Body {
        Empty,
        Text(String),
        Pair(String, String),
        Named { a: String },
    }
    assert_eq!(heap_bytes(&Body::Empty), 0);
    assert_eq!(heap_bytes(&Body::Text("x".repeat(50))), alloc_bytes(50));
    assert_eq!(
        heap_bytes(&Body::Pair("a".into(), "b".repeat(30))),
        32 + alloc_bytes(30)
    );
    assert_eq!(heap_bytes(&Body::Named { a: "a".into() }), 32);
}

#[test]
fn a_failing_serialize_impl_gives_what_was_walked_before_the_failure() {
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom("no"))
        }
    }
    #[derive(Serialize)]
    struct Partly {
        before: String,
        broken: Fails,
        after: String,
    }
    assert_eq!(heap_bytes(&Fails), 0);
    let p = Partly {
        before: "x".repeat(100),
        broken: Fails,
        after: "y".repeat(100),
    };
    assert_eq!(heap_bytes(&p), alloc_bytes(100));
}

#[test]
fn absurd_sizes_saturate_instead_of_panicking() {
    assert_eq!(round_up(usize::MAX, 8), usize::MAX);
    assert_eq!(table_bytes(usize::MAX, Shape::of::<u64>(false)), usize::MAX);
    let huge = Shape {
        size: usize::MAX,
        ..Shape::of::<u64>(false)
    };
    assert_eq!(huge.tagged().size, usize::MAX);
    assert_eq!(huge.stride(), usize::MAX);
}
