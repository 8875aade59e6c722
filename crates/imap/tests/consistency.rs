//! The consistency property of FETCH rewriting, over generated MIME messages: whatever the
//! server sent, the rewritten answer satisfies RFC822.SIZE == len(BODY[]), every partial fetch
//! is the matching slice, every BODY[n] and BODY[n.MIME] is found in BODY[] where the part is,
//! HEADER + TEXT == BODY[], and BODYSTRUCTURE's sizes are the sizes of those parts.

use imap::fetch::{parse_response, plan, rewrite};
use imap_codec::imap_types::body::BodyStructure;
use imap_codec::imap_types::fetch::{MessageDataItem, Section};
use proptest::prelude::*;

/// A MIME entity: a leaf text, or a multipart of children.
#[derive(Debug, Clone)]
enum Tree {
    Leaf(String),
    Multi(Vec<Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = "[a-zA-Z0-9 .,]{0,40}(\r\n[a-zA-Z0-9 ]{0,30}){0,3}".prop_map(Tree::Leaf);
    leaf.prop_recursive(3, 12, 4, |inner| {
        proptest::collection::vec(inner, 1..4).prop_map(Tree::Multi)
    })
}

fn render(t: &Tree, depth: usize, out: &mut Vec<u8>) {
    match t {
        Tree::Leaf(text) => {
            out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n");
            out.extend_from_slice(text.as_bytes());
        }
        Tree::Multi(kids) => {
            let b = format!("b{depth}x");
            out.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n").as_bytes(),
            );
            for k in kids {
                out.extend_from_slice(format!("--{b}\r\n").as_bytes());
                render(k, depth + 1, out);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        }
    }
}

fn message(t: &Tree) -> Vec<u8> {
    let mut m =
        b"X-Envelopd: decrypted=aes-256-gcm; signature=none\r\nFrom: a@x.example\r\nSubject: t\r\n"
            .to_vec();
    render(t, 0, &mut m);
    m
}

/// Leaf sizes in BODYSTRUCTURE order, with their part numbers.
fn leaves(bs: &BodyStructure<'_>, path: Vec<u32>, out: &mut Vec<(Vec<u32>, u32)>) {
    match bs {
        BodyStructure::Single { body, .. } => out.push((path, body.basic.size)),
        BodyStructure::Multi { bodies, .. } => {
            for (i, b) in bodies.as_ref().iter().enumerate() {
                let mut p = path.clone();
                p.push(i as u32 + 1);
                leaves(b, p, out);
            }
        }
    }
}

fn data_of(item: &MessageDataItem<'_>) -> Vec<u8> {
    match item {
        MessageDataItem::BodyExt { data, .. } => data
            .clone()
            .into_option()
            .map(|d| d.into_owned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_fetch_form_describes_the_same_message(t in tree(), o in 0u32..200, n in 1u32..100) {
        let shown = message(&t);
        let request = format!("a FETCH 1 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[]<{o}.{n}> BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[1.MIME])\r\n");
        let (_, p) = plan(request.as_bytes()).unwrap();
        // What a server answers for the stored (encrypted) message: other sizes, other bytes.
        let server = format!("* 1 FETCH (RFC822.SIZE 99999 BODY[] {{3}}\r\nxyz BODY[]<{o}> {{1}}\r\nq BODY[HEADER] {{1}}\r\nh BODY[TEXT] {{1}}\r\nt BODYSTRUCTURE (\"APPLICATION\" \"PKCS7-MIME\" NIL NIL NIL \"BASE64\" 3) BODY[1] {{1}}\r\np BODY[1.MIME] {{1}}\r\nm UID 4 BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {{2}}\r\n\r\n)\r\n");
        let r = parse_response(server.as_bytes()).unwrap();
        let out = rewrite(r, &p, Some(&shown));
        let back = parse_response(&out).expect("the rewritten response parses");
        let mut size = None;
        let mut parts = std::collections::HashMap::new();
        let mut structure = None;
        for item in &back.items {
            match item {
                MessageDataItem::Rfc822Size(s) => size = Some(*s as usize),
                MessageDataItem::BodyExt { section, origin, .. } => {
                    parts.insert(format!("{section:?}/{origin:?}"), data_of(item));
                }
                MessageDataItem::BodyStructure(bs) => structure = Some(bs.clone()),
                MessageDataItem::Uid(_) => prop_assert!(false, "UID was not asked for"),
                _ => {}
            }
        }
        let whole = parts[&format!("{:?}/{:?}", None::<Section>, None::<u32>)].clone();
        prop_assert_eq!(&whole, &shown);
        prop_assert_eq!(size, Some(shown.len()));
        let start = (o as usize).min(shown.len());
        let end = (start + n as usize).min(shown.len());
        prop_assert_eq!(&parts[&format!("{:?}/{:?}", None::<Section>, Some(o))], &shown[start..end].to_vec());
        let header = parts.iter().find(|(k, _)| k.starts_with("Some(Header(None))")).unwrap().1.clone();
        let text = parts.iter().find(|(k, _)| k.starts_with("Some(Text(None))")).unwrap().1.clone();
        prop_assert_eq!([header, text].concat(), shown.clone());
        let part1 = parts.iter().find(|(k, _)| k.starts_with("Some(Part(")).unwrap().1.clone();
        let mime1 = parts.iter().find(|(k, _)| k.starts_with("Some(Mime(")).unwrap().1.clone();
        let joined = [mime1.clone(), part1.clone()].concat();
        prop_assert!(
            shown.windows(joined.len().max(1)).any(|w| w == joined.as_slice()) || joined.is_empty(),
            "BODY[1.MIME] + BODY[1] must be the first part as it stands in BODY[]"
        );
        // BODYSTRUCTURE: the first leaf's size is the size of BODY[<its number>].
        let mut ls = Vec::new();
        leaves(&structure.unwrap(), Vec::new(), &mut ls);
        if let Some((path, leaf_size)) = ls.first() {
            let mut section_bytes = shown.clone();
            if !path.is_empty() {
                let part = imap::structure::part(path);
                section_bytes = imap::structure::section(&shown, Some(&Section::Part(part)));
            } else {
                section_bytes = imap::structure::section(&section_bytes, Some(&Section::Text(None)));
            }
            prop_assert_eq!(*leaf_size as usize, section_bytes.len());
        }
    }
}
