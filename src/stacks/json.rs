//! Terraform's JSON syntax (`*.tf.json`, `*.tofu.json`) rewritten as the HCL that says the same
//! about what detection reads: `module` sources, the `terraform` block's `backend`/`cloud`, and
//! `terraform_remote_state` data sources. The HCL analysis then gives the same edges as for
//! the HCL twin. Strings stay templates (`"${path.module}/x"`), as Terraform reads them.

use serde_json::{Map, Value};

/// The HCL text, and for each of its first lines (one `module` block each) the line of the JSON
/// file it stands for; later lines (backends, remote states) carry no line of their own.
pub(crate) struct Rewritten {
    pub text: String,
    pub lines: Vec<u32>,
}

impl Rewritten {
    /// The JSON file's line for a line of the HCL text.
    pub fn line(&self, hcl_line: u32) -> u32 {
        let i = hcl_line.saturating_sub(1) as usize;
        self.lines.get(i).copied().unwrap_or(1)
    }
}

/// Rewrites a JSON configuration file, or says why it is not one.
pub(crate) fn to_hcl(text: &str) -> Result<Rewritten, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("json: {e}"))?;
    let Value::Object(root) = root else {
        return Err("json: the file is not an object".to_string());
    };
    let mut out = Rewritten {
        text: String::new(),
        lines: Vec::new(),
    };
    // Every HCL line written gets the JSON line it came from (1 when unknown).
    let mut push = |hcl: String, line: Option<u32>| {
        out.text.push_str(&hcl);
        out.text.push('\n');
        out.lines
            .extend(std::iter::repeat_n(line.unwrap_or(1), hcl.lines().count()));
    };
    let mut sources: Vec<&str> = Vec::new();
    // Terraform allows a block type's value to be an array of objects, each adding blocks.
    for module in bodies(root.get("module")) {
        for (name, body) in module {
            for body in bodies(Some(body)) {
                if let Some(source) = body.get("source") {
                    sources.extend(source.as_str());
                    let line = line_of(text, &encode(source));
                    push(
                        format!("module {} {{ source = {} }}", quote(name), hcl(source)),
                        Some(line),
                    );
                }
            }
        }
    }
    for terraform in bodies(root.get("terraform")) {
        for (kind, label) in [("backend", true), ("cloud", false)] {
            for backend in bodies(terraform.get(kind)) {
                if label {
                    for (name, config) in backend {
                        let config = bodies(Some(config)).next().cloned().unwrap_or_default();
                        let hcl = format!(
                            "terraform {{ \nbackend {} {} \n}}",
                            quote(name),
                            block(&config)
                        );
                        push(hcl, None);
                    }
                } else {
                    push(
                        format!("terraform {{ \ncloud {} \n}}", block(backend)),
                        None,
                    );
                }
            }
        }
    }
    for data in bodies(root.get("data")) {
        for states in bodies(data.get("terraform_remote_state")) {
            for (name, body) in states {
                for body in bodies(Some(body)) {
                    push(
                        format!(
                            "data \"terraform_remote_state\" {} {}",
                            quote(name),
                            block(body)
                        ),
                        None,
                    );
                }
            }
        }
    }
    // Strings holding templates are where `file()` and `"${path.module}/..."` reads hide: each
    // is written as a heredoc (its content taken as it is, as Terraform reads a JSON string).
    let mut found = Vec::new();
    for value in root.values() {
        templates(value, &mut found);
    }
    for template in found {
        if sources.contains(&template) || template.contains("TIDEMARK_JSON_STRING") {
            continue;
        }
        let line = line_of(text, &encode(&Value::String(template.to_string())));
        push(
            format!(
                "locals {{\ntidemark_json_string = <<TIDEMARK_JSON_STRING\n{template}\nTIDEMARK_JSON_STRING\n}}"
            ),
            Some(line),
        );
    }
    Ok(out)
}

/// The strings below a value that hold a template interpolation.
fn templates<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) if s.contains("${") => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| templates(v, out)),
        Value::Object(map) => map.values().for_each(|v| templates(v, out)),
        _ => {}
    }
}

/// The objects a block value stands for: an object, or each object of an array.
fn bodies(value: Option<&Value>) -> impl Iterator<Item = &Map<String, Value>> {
    let list: Vec<&Map<String, Value>> = match value {
        Some(Value::Object(map)) => vec![map],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
}

/// A block body with each key an attribute.
fn block(body: &Map<String, Value>) -> String {
    let attrs: Vec<String> = body
        .iter()
        .filter(|(k, _)| is_ident(k))
        .map(|(k, v)| format!("{k} = {}", hcl(v)))
        .collect();
    if attrs.is_empty() {
        "{}".to_string()
    } else {
        format!("{{\n{}\n}}", attrs.join("\n"))
    }
}

/// A JSON value as an HCL expression: JSON string escapes are HCL's too.
fn hcl(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", quote(k), hcl(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(hcl).collect();
            format!("[{}]", items.join(", "))
        }
        other => encode(other),
    }
}

fn encode(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn quote(text: &str) -> String {
    encode(&Value::String(text.to_string()))
}

/// The first line holding `needle` (1 when none does).
fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |n| n as u32 + 1)
}

/// An HCL identifier (an attribute name written bare).
fn is_ident(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}
