//! The IR writer's serialization and bin layout against OpenVINO's own.

use super::*;

#[test]
fn small_graph_serializes_like_openvino() {
    let dir = tempfile::tempdir().unwrap();
    let mut g: Graph = Graph::new("m");
    let x = g.parameter("x", Elem::F32, &[DYN, 2]);
    let c = g
        .constant("c", Elem::F32, &[1], &2f32.to_le_bytes())
        .unwrap();
    let c2 = g
        .constant("c2", Elem::F32, &[1], &2f32.to_le_bytes())
        .unwrap();
    let y = g.op1(
        "Add",
        "opset1",
        "",
        &[x, c],
        &[("auto_broadcast", "numpy")],
        (Elem::F32, &[DYN, 2]),
    );
    let z = g.op1(
        "Add",
        "opset1",
        "add2",
        &[y, c2],
        &[("auto_broadcast", "numpy")],
        (Elem::F32, &[DYN, 2]),
    );
    g.mark(z, "decompression", None);
    g.result("r", z, "y");
    g.set_rt_info(vec![RtInfo::group("a", vec![RtInfo::value("b", "1")])]);
    g.write(&dir.path().join("m.bin"), &dir.path().join("m.xml"))
        .unwrap();
    let xml = std::fs::read_to_string(dir.path().join("m.xml")).unwrap();
    // Identical small constants share one offset, so the bin holds one f32.
    assert_eq!(
        std::fs::metadata(dir.path().join("m.bin")).unwrap().len(),
        4
    );
    assert!(
        xml.contains("<data element_type=\"f32\" shape=\"1\" offset=\"0\" size=\"4\" />"),
        "{xml}"
    );
    assert!(xml.contains("name=\"Add_3\" type=\"Add\""), "{xml}");
    assert!(xml.contains("<port id=\"2\" precision=\"FP32\">"), "{xml}");
    assert!(
        xml.contains("<edge from-layer=\"3\" from-port=\"2\" to-layer=\"4\" to-port=\"0\" />"),
        "{xml}"
    );
    assert!(xml.contains("output_names=\"y\""), "{xml}");
    assert!(
        xml.contains(
            "\t<rt_info>\n\t\t<a>\n\t\t\t<b value=\"1\" />\n\t\t</a>\n\t</rt_info>\n</net>\n"
        ),
        "{xml}"
    );
}

#[test]
fn constant_size_must_match_its_type() {
    let mut g: Graph = Graph::new("m");
    assert!(g.constant("w", Elem::I4, &[3, 4], &[0u8; 6]).is_ok());
    let e = g
        .constant("w2", Elem::I4, &[3, 4], &[0u8; 12])
        .unwrap_err()
        .to_string();
    assert!(e.contains("w2") && e.contains("i4 [3, 4]"), "{e}");
}

/// How the test's deferred constants give their bytes.
#[derive(Clone, Debug)]
enum Src {
    Owned(Vec<u8>),
    Pieces(Vec<u8>),
}

impl std::fmt::Display for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Src::Owned(b) => write!(f, "owned {}", b.len()),
            Src::Pieces(b) => write!(f, "pieces {}", b.len()),
        }
    }
}

#[test]
fn bin_holds_every_kind_of_constant_in_call_order_at_the_offsets_the_xml_names() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("m.bin");
    let mut g: Graph<Src> = Graph::new("m");
    // Larger than one pending buffer, so a copied constant is split over several writes.
    let big: Vec<u8> = (0..oxport_io::PENDING_BYTES + 12345)
        .map(|i| (i % 251) as u8)
        .collect();
    let small = [1u8, 2, 3, 4];
    let owned: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    g.constant("a", Elem::U8, &[4], &small).unwrap();
    g.constant("b", Elem::U8, &[big.len()], &big).unwrap();
    g.deferred("c", Elem::U8, &[owned.len()], Src::Owned(owned.clone()));
    // A small constant seen before shares its offset (OpenVINO's ConstantWriter).
    g.deferred("d", Elem::U8, &[4], Src::Owned(small.to_vec()));
    g.deferred("e", Elem::U8, &[owned.len()], Src::Pieces(owned.clone()));
    g.constant("f", Elem::U8, &[3], &[9, 9, 9]).unwrap();
    let text = g.to_text();
    assert!(
        text.contains("<- owned 1000") && text.contains("= [9, 9, 9]"),
        "{text}"
    );
    g.write_bin(&bin, |src, sink| match src {
        Src::Owned(b) => sink.owned(b.clone()),
        Src::Pieces(b) => {
            for piece in b.chunks(300) {
                let mut buf = sink.buffer();
                buf.clear();
                buf.extend_from_slice(piece);
                sink.piece(buf)?;
            }
            Ok(())
        }
    })
    .unwrap();
    let offsets: Vec<(String, String)> = g
        .layers
        .iter()
        .map(|l| {
            let get = |k: &str| l.data.iter().find(|(n, _)| *n == k).unwrap().1.clone();
            (get("offset"), get("size"))
        })
        .collect();
    g.write_xml(&dir.path().join("m.xml")).unwrap();
    let mut want = small.to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(&owned);
    want.extend_from_slice(&owned);
    want.extend_from_slice(&[9, 9, 9]);
    assert_eq!(std::fs::read(&bin).unwrap(), want);
    let b = big.len();
    let at = |o: usize, n: usize| (o.to_string(), n.to_string());
    assert_eq!(
        offsets,
        vec![
            at(0, 4),
            at(4, b),
            at(4 + b, 1000),
            at(0, 4),
            at(1004 + b, 1000),
            at(2004 + b, 3),
        ]
    );
}

#[test]
fn a_deferred_constant_of_the_wrong_size_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut g: Graph<Src> = Graph::new("m");
    g.deferred("w", Elem::I4, &[3, 4], Src::Owned(vec![0; 12]));
    let e = g
        .write_bin(&dir.path().join("m.bin"), |src, sink| match src {
            Src::Owned(b) | Src::Pieces(b) => sink.owned(b.clone()),
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("constant w") && e.contains("i4 [3, 4]"), "{e}");
}
