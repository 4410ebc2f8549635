use std::io::{Cursor, Read, Write};

use crate::*;

fn samples() -> Vec<(String, Vec<u8>)> {
    (0..20)
        .flat_map(|i| {
            [
                (format!("dir/s{i:03}.jpg"), vec![i as u8; 1000 + i]),
                (format!("dir/s{i:03}.cls"), i.to_string().into_bytes()),
            ]
        })
        .collect()
}

fn tar_bytes(items: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = TarOut::new(Vec::new());
    for (n, d) in items {
        out.append(n, d.len() as u64, &mut &d[..]).unwrap();
    }
    out.finish().unwrap()
}

fn make(format: Format, items: &[(String, Vec<u8>)]) -> Vec<u8> {
    let tar = tar_bytes(items);
    match format {
        Format::Tar => tar,
        Format::TarGz => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        Format::TarLz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        Format::Zip => {
            let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
            for (n, d) in items {
                z.start_file(n.as_str(), zip::write::SimpleFileOptions::default())
                    .unwrap();
                z.write_all(d).unwrap();
            }
            z.finish().unwrap().into_inner()
        }
    }
}

struct Grab {
    sel: Selector,
    got: Vec<(String, Vec<u8>)>,
}

impl Visitor for Grab {
    fn wants(&mut self, m: &Member) -> bool {
        self.sel.matches(&m.name)
    }
    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        self.got.push((m.name.clone(), v));
        Ok(Flow::Continue)
    }
}

#[test]
fn every_format_lists_and_reads_members() {
    let items = samples();
    for f in [Format::Tar, Format::TarGz, Format::TarLz4, Format::Zip] {
        let bytes = make(f, &items);
        assert_eq!(Format::from_magic(&bytes), Some(f), "{f:?}");
        let members = list(f, Cursor::new(&bytes), bytes.len() as u64).unwrap();
        let names: Vec<_> = members.iter().map(|m| m.name.clone()).collect();
        assert_eq!(
            names,
            items.iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
            "{f:?}"
        );
        let mut g = Grab {
            sel: Selector::new("dir/s007", MatchMode::Wdskey).unwrap(),
            got: vec![],
        };
        visit(
            f,
            Cursor::new(&bytes),
            bytes.len() as u64,
            &Limits::default(),
            &mut g,
        )
        .unwrap();
        assert_eq!(g.got, items[14..16].to_vec(), "{f:?}");
        if f == Format::Tar {
            // Offsets point at member data in the file.
            let m = &members[3];
            assert_eq!(
                &bytes[m.offset as usize..(m.offset + m.size) as usize],
                &items[3].1[..]
            );
        }
    }
}

#[test]
fn selectors() {
    let s = |e: &str, m| Selector::new(e, m).unwrap();
    assert!(s(r"s0\d5\.jpg$", MatchMode::Regexp).matches("dir/s005.jpg"));
    assert!(s("dir/s00", MatchMode::Prefix).matches("dir/s001.cls"));
    assert!(s(".cls", MatchMode::Suffix).matches("dir/s001.cls"));
    assert!(s("s01", MatchMode::Substr).matches("dir/s011.jpg"));
    assert!(!s("dir/s01", MatchMode::Wdskey).matches("dir/s011.jpg"));
    assert!(Selector::new("(", MatchMode::Regexp).is_err());
    assert!(MatchMode::parse(Some("glob")).is_err());
}

#[test]
fn hostile_archives_fail_cleanly() {
    let items = samples();
    // Truncated in the middle of a member.
    let tar = make(Format::Tar, &items);
    let cut = &tar[..tar.len() / 2];
    let mut g = Grab {
        sel: Selector::new(".", MatchMode::Regexp).unwrap(),
        got: vec![],
    };
    let e = visit(
        Format::Tar,
        Cursor::new(cut),
        cut.len() as u64,
        &Limits::default(),
        &mut g,
    )
    .unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    // Truncated inside a header.
    let members = list(Format::Tar, Cursor::new(&tar), tar.len() as u64).unwrap();
    let at = (members[5].offset - 200) as usize;
    assert!(matches!(
        list(Format::Tar, Cursor::new(&tar[..at]), at as u64),
        Err(ShardError::Corrupt(_))
    ));
    // Garbage.
    assert!(list(Format::Tar, Cursor::new(&[7u8; 2048][..]), 2048).is_err());
    assert!(list(Format::Zip, Cursor::new(&b"PK\x03\x04 nonsense"[..]), 14).is_err());
    assert!(list(Format::TarGz, Cursor::new(&[0x1f, 0x8b, 1, 2, 3][..]), 5).is_err());
    // A member that claims more bytes than the file has.
    let mut h = tar::Header::new_gnu();
    h.set_size(1 << 40);
    h.set_path("huge").unwrap();
    h.set_cksum();
    let mut absurd = h.as_bytes().to_vec();
    absurd.extend_from_slice(&[0u8; 1024]);
    let e = list(Format::Tar, Cursor::new(&absurd), absurd.len() as u64).unwrap_err();
    assert!(matches!(e, ShardError::Corrupt(_)), "{e}");
    // A decompression bomb.
    let zeros = vec![(String::from("zeros"), vec![0u8; 8 << 20])];
    let bomb = make(Format::TarGz, &zeros);
    let limits = Limits {
        max_ratio: 20,
        bomb_floor: 1 << 20,
        max_members: 10,
    };
    let mut g = Grab {
        sel: Selector::new(".", MatchMode::Regexp).unwrap(),
        got: vec![],
    };
    let e = visit(
        Format::TarGz,
        Cursor::new(&bomb),
        bomb.len() as u64,
        &limits,
        &mut g,
    )
    .unwrap_err();
    assert!(matches!(e, ShardError::Bomb(_)), "{e}");
    // Names that escape are refused in outputs.
    let mut out = TarOut::new(Vec::new());
    assert!(matches!(
        out.append("../etc/passwd", 1, &mut &b"x"[..]),
        Err(ShardError::UnsafeName(_))
    ));
    assert!(out.append("/abs", 1, &mut &b"x"[..]).is_err());
}

#[test]
fn streamed_members_form_a_valid_tar() {
    let long = format!("deep/{}/name.txt", "d".repeat(150));
    let mut bytes = Vec::new();
    for (name, data) in [("a.txt", &b"hello"[..]), (long.as_str(), b"long name")] {
        bytes.extend(member_header(name, data.len() as u64).unwrap());
        bytes.extend_from_slice(data);
        bytes.extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
    }
    bytes.extend_from_slice(&END_OF_ARCHIVE);
    let members = list(Format::Tar, Cursor::new(&bytes), bytes.len() as u64).unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[1].name, long);
    assert_eq!(&bytes[members[1].offset as usize..][..9], b"long name");
}
