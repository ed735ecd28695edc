//! Generates `schemas.rs`: the field layout of every Kafka request this crate validates, as
//! static tables, read from Kafka's own message definitions in `schemas/*.json` (the
//! protocol's facts: field order, types, and the versions in which each field exists, is
//! nullable, flexible or tagged). Adding an API is adding its JSON file.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

fn main() {
    let dir = Path::new("schemas");
    println!("cargo:rerun-if-changed=schemas");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("schemas/ is readable")
        .map(|entry| entry.expect("schemas/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    let mut requests = String::new();
    let mut header = None;
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(path).expect("schema is readable");
        let schema: Value = serde_json::from_str(&strip_comments(&text))
            .unwrap_or_else(|e| panic!("{}: not JSON once comments are removed: {e}", path.display()));
        let generated = message(&schema, path);
        match schema["type"].as_str() {
            Some("request") => writeln!(requests, "    {generated},").expect("write to a String"),
            Some("header") if schema["name"] == "RequestHeader" => header = Some(generated),
            other => panic!("{}: unexpected message type {other:?}", path.display()),
        }
    }
    let header = header.expect("schemas/RequestHeader.json is present");
    let out = format!(
        "/// Kafka `RequestHeader`, every version.\npub static REQUEST_HEADER: MessageSchema = {header};\n\n\
         /// Every request schema in `schemas/`, in file-name order.\npub static REQUESTS: &[MessageSchema] = &[\n{requests}];\n"
    );
    let target = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR is set")).join("schemas.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}

/// Kafka's schema files are JSON with whole-line `//` comments.
fn strip_comments(text: &str) -> String {
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn message(schema: &Value, path: &Path) -> String {
    let name = schema["name"].as_str().expect("message name");
    let api_key = schema["apiKey"].as_i64().unwrap_or(-1);
    let valid = versions(schema["validVersions"].as_str().expect("validVersions"));
    let flexible = versions(schema["flexibleVersions"].as_str().unwrap_or("none"));
    let mut common = HashMap::new();
    for common_struct in schema["commonStructs"].as_array().into_iter().flatten() {
        let struct_name = common_struct["name"].as_str().expect("common struct name").to_string();
        common.insert(struct_name, common_struct["fields"].clone());
    }
    let fields = fields(schema["fields"].as_array().expect("fields"), &common, path);
    format!(
        "MessageSchema {{ name: {name:?}, api_key: {api_key}, valid: {valid}, flexible: {flexible}, fields: {fields} }}"
    )
}

fn fields(list: &[Value], common: &HashMap<String, Value>, path: &Path) -> String {
    let mut out = String::from("&[");
    for field in list {
        let name = field["name"].as_str().expect("field name");
        let ty = field["type"].as_str().expect("field type");
        let versions_text =
            field["versions"].as_str().unwrap_or_else(|| panic!("{}: {name} has no versions", path.display()));
        let nullable = versions(field["nullableVersions"].as_str().unwrap_or("none"));
        let flexible = match field["flexibleVersions"].as_str() {
            Some(text) => format!("Some({})", versions(text)),
            None => "None".to_string(),
        };
        let tag = match field["tag"].as_u64() {
            Some(tag) => {
                let tagged = versions(field["taggedVersions"].as_str().expect("a tagged field has taggedVersions"));
                format!("Some(Tag {{ tag: {tag}, versions: {tagged} }})")
            }
            None => "None".to_string(),
        };
        let ty = field_type(ty, field, common, path);
        write!(
            out,
            "Field {{ name: {name:?}, ty: {ty}, versions: {}, nullable: {nullable}, flexible: {flexible}, tag: {tag} }}, ",
            versions(versions_text)
        )
        .expect("write to a String");
    }
    out.push(']');
    out
}

fn field_type(ty: &str, field: &Value, common: &HashMap<String, Value>, path: &Path) -> String {
    if let Some(element) = ty.strip_prefix("[]") {
        return format!("Type::Array(&{})", field_type(element, field, common, path));
    }
    let primitive = match ty {
        "bool" => "Bool",
        "int8" => "Int8",
        "int16" => "Int16",
        "uint16" => "Uint16",
        "int32" => "Int32",
        "uint32" => "Uint32",
        "int64" => "Int64",
        "float64" => "Float64",
        "uuid" => "Uuid",
        "string" => "String",
        "bytes" => "Bytes",
        "records" => "Records",
        _ => "",
    };
    if !primitive.is_empty() {
        return format!("Type::{primitive}");
    }
    let inner = match field["fields"].as_array() {
        Some(inline) => inline.clone(),
        None => common
            .get(ty)
            .and_then(|fields| fields.as_array().cloned())
            .unwrap_or_else(|| panic!("{}: unknown type {ty}", path.display())),
    };
    format!("Type::Struct({})", fields(&inner, common, path))
}

/// "0+", "3-7", "5", "none" → `Versions { low, high }` (empty when low > high).
fn versions(text: &str) -> String {
    let text = text.trim();
    let (low, high) = if text == "none" || text.is_empty() {
        (1, 0)
    } else if let Some(low) = text.strip_suffix('+') {
        (low.parse().expect("version"), i16::MAX)
    } else if let Some((low, high)) = text.split_once('-') {
        (low.parse().expect("version"), high.parse().expect("version"))
    } else {
        let only: i16 = text.parse().expect("version");
        (only, only)
    };
    format!("Versions {{ low: {low}, high: {high} }}")
}
