//! Owns the twin document of one identity and its rules, as pure functions with no I/O:
//! recursive merge where `null` deletes, whole replacement, the size/depth/key/string limits
//! (violations → 400004 with the twin untouched), versions and `$metadata`.

use ironhub_protocol::limits;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::HubError;
use super::etag;

pub type Section = Map<String, Value>;

/// One device or module twin. Sections hold user properties only; `$version` and `$metadata`
/// are added when rendering, so merges never have to step around them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    pub tags: Section,
    pub desired: Section,
    pub reported: Section,
    pub desired_metadata: Section,
    pub reported_metadata: Section,
    pub desired_version: u64,
    pub reported_version: u64,
    pub version: u64,
}

/// What a successful desired write must push to connected clients: body and `$version`.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredNotification {
    pub body: Value,
    pub version: u64,
}

impl Twin {
    pub fn new(now: &str) -> Self {
        Twin {
            tags: Section::new(),
            desired: Section::new(),
            reported: Section::new(),
            desired_metadata: fresh_metadata(&Section::new(), now, Some(1)),
            reported_metadata: fresh_metadata(&Section::new(), now, None),
            desired_version: 1,
            reported_version: 1,
            version: 1,
        }
    }

    pub fn etag(&self) -> String {
        etag::twin_etag(self.version)
    }

    /// Service PATCH: merges into tags and desired. Returns the notification to push when the
    /// desired section was written (tags-only writes notify nobody).
    pub fn patch(
        &mut self,
        tags: Option<&Section>,
        desired: Option<&Section>,
        now: &str,
    ) -> Result<Option<DesiredNotification>, HubError> {
        let mut next = self.clone();
        if let Some(tags) = tags {
            merge(&mut next.tags, tags);
            validate_section(&next.tags, limits::MAX_TWIN_TAGS_BYTES, "tags")?;
        }
        let mut notification = None;
        if let Some(desired) = desired {
            let desired = without_system_keys(desired);
            merge(&mut next.desired, &desired);
            validate_section(&next.desired, limits::MAX_TWIN_DESIRED_BYTES, "desired properties")?;
            next.desired_version += 1;
            merge_metadata(&mut next.desired_metadata, &desired, now, Some(next.desired_version));
            notification = Some(notification_for(desired, next.desired_version));
        }
        if tags.is_some() || desired.is_some() {
            next.version += 1;
        }
        *self = next;
        Ok(notification)
    }

    /// Service PUT: tags and desired are replaced whole (missing means empty); reported stays.
    pub fn replace(&mut self, tags: &Section, desired: &Section, now: &str) -> Result<DesiredNotification, HubError> {
        let desired = without_system_keys(desired);
        let tags = without_nulls(tags);
        let desired = without_nulls(&desired);
        validate_section(&tags, limits::MAX_TWIN_TAGS_BYTES, "tags")?;
        validate_section(&desired, limits::MAX_TWIN_DESIRED_BYTES, "desired properties")?;
        self.tags = tags;
        self.desired_version += 1;
        self.desired_metadata = fresh_metadata(&desired, now, Some(self.desired_version));
        self.desired = desired.clone();
        self.version += 1;
        Ok(notification_for(desired, self.desired_version))
    }

    /// Device-side reported PATCH. Returns the new reported `$version`.
    pub fn patch_reported(&mut self, patch: &Section, now: &str) -> Result<u64, HubError> {
        let mut reported = self.reported.clone();
        merge(&mut reported, patch);
        validate_section(&reported, limits::MAX_TWIN_REPORTED_BYTES, "reported properties")?;
        self.reported = reported;
        merge_metadata(&mut self.reported_metadata, patch, now, None);
        self.reported_version += 1;
        self.version += 1;
        Ok(self.reported_version)
    }

    /// `{"desired": {.., "$version"}, "reported": {.., "$version"}}` as a device twin GET returns it.
    pub fn device_view(&self) -> Value {
        json!({
            "desired": with_version(&self.desired, self.desired_version, None),
            "reported": with_version(&self.reported, self.reported_version, None),
        })
    }

    /// `properties` as the service API renders it, with `$metadata` and `$version`.
    pub fn service_properties(&self) -> Value {
        json!({
            "desired": with_version(&self.desired, self.desired_version, Some(&self.desired_metadata)),
            "reported": with_version(&self.reported, self.reported_version, Some(&self.reported_metadata)),
        })
    }
}

fn with_version(section: &Section, version: u64, metadata: Option<&Section>) -> Value {
    let mut out = section.clone();
    if let Some(meta) = metadata {
        out.insert("$metadata".into(), Value::Object(meta.clone()));
    }
    out.insert("$version".into(), json!(version));
    Value::Object(out)
}

fn notification_for(mut body: Section, version: u64) -> DesiredNotification {
    body.insert("$version".into(), json!(version));
    DesiredNotification { body: Value::Object(body), version }
}

/// A service body may round-trip a twin it read: its `$version`/`$metadata` are not properties.
pub fn without_system_keys(section: &Section) -> Section {
    section
        .iter()
        .filter(|(k, _)| k.as_str() != "$version" && k.as_str() != "$metadata")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn without_nulls(section: &Section) -> Section {
    let mut out = Section::new();
    merge(&mut out, section);
    out
}

/// Recursive merge: `null` deletes the key, an object merges into an object, anything else
/// replaces. Nulls inside newly created objects vanish too (they delete nothing).
pub fn merge(target: &mut Section, patch: &Section) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(child_patch) => {
                let slot = target.entry(key.clone()).or_insert_with(|| Value::Object(Section::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Section::new());
                }
                if let Value::Object(child) = slot {
                    merge(child, child_patch);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn node_metadata(now: &str, version: Option<u64>) -> Section {
    let mut node = Section::new();
    node.insert("$lastUpdated".into(), json!(now));
    if let Some(v) = version {
        node.insert("$lastUpdatedVersion".into(), json!(v));
    }
    node
}

/// Metadata mirrors the merge: every object level the patch touches gets `$lastUpdated`
/// (and `$lastUpdatedVersion` on desired); leaves written get a fresh node; deleted keys lose theirs.
pub fn merge_metadata(meta: &mut Section, patch: &Section, now: &str, version: Option<u64>) {
    meta.extend(node_metadata(now, version));
    for (key, value) in patch {
        match value {
            Value::Null => {
                meta.remove(key);
            }
            Value::Object(child_patch) => {
                let slot = meta.entry(key.clone()).or_insert_with(|| Value::Object(Section::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Section::new());
                }
                if let Value::Object(child) = slot {
                    merge_metadata(child, child_patch, now, version);
                }
            }
            _ => {
                meta.insert(key.clone(), Value::Object(node_metadata(now, version)));
            }
        }
    }
}

/// Metadata for a section written whole.
pub fn fresh_metadata(doc: &Section, now: &str, version: Option<u64>) -> Section {
    let mut meta = Section::new();
    merge_metadata(&mut meta, doc, now, version);
    meta
}

/// Checks one whole section against IoT Hub's limits.
pub fn validate_section(section: &Section, max_bytes: usize, what: &str) -> Result<(), HubError> {
    let size = object_size(section, 1, what)?;
    if size > max_bytes {
        return Err(HubError::invalid(format!(
            "Twin {what} are {size} bytes, over the {max_bytes} byte limit"
        )));
    }
    Ok(())
}

fn validate_key(key: &str, what: &str) -> Result<(), HubError> {
    if key.len() > limits::MAX_TWIN_KEY_BYTES {
        return Err(HubError::invalid(format!("A key in twin {what} is longer than {} bytes", limits::MAX_TWIN_KEY_BYTES)));
    }
    if key.is_empty() || key.chars().any(|c| c == '.' || c == '$' || c == ' ' || c.is_control()) {
        return Err(HubError::invalid(format!(
            "Twin {what} key '{}' is empty or contains '.', '$', a space or a control character",
            key.escape_debug()
        )));
    }
    Ok(())
}

/// Size as IoT Hub counts it (UTF-8 key lengths plus value sizes), checking depth, keys and
/// string lengths on the way.
fn object_size(obj: &Section, depth: usize, what: &str) -> Result<usize, HubError> {
    if depth > limits::MAX_TWIN_DEPTH {
        return Err(HubError::invalid(format!("Twin {what} are nested deeper than {} levels", limits::MAX_TWIN_DEPTH)));
    }
    let mut size = 0;
    for (key, value) in obj {
        validate_key(key, what)?;
        size += key.len() + value_size(value, depth, what)?;
    }
    Ok(size)
}

fn value_size(value: &Value, depth: usize, what: &str) -> Result<usize, HubError> {
    Ok(match value {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(s) => {
            if s.len() > limits::MAX_TWIN_STRING_BYTES {
                return Err(HubError::invalid(format!(
                    "A string in twin {what} is longer than {} bytes",
                    limits::MAX_TWIN_STRING_BYTES
                )));
            }
            s.len()
        }
        Value::Array(items) => {
            let mut total = 0;
            for item in items {
                total += value_size(item, depth + 1, what)?;
            }
            total
        }
        Value::Object(child) => object_size(child, depth + 1, what)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00.000Z";
    const LATER: &str = "2026-01-01T00:00:01.000Z";

    fn obj(v: Value) -> Section {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_deletes_nulls_and_replaces_non_objects() {
        let mut t = obj(json!({"a": {"b": 1, "c": 2}, "d": 3, "e": {"f": 1}}));
        merge(&mut t, &obj(json!({"a": {"b": null, "x": {"y": null, "z": 1}}, "d": null, "e": 5, "g": [1, null]})));
        assert_eq!(Value::Object(t), json!({"a": {"c": 2, "x": {"z": 1}}, "e": 5, "g": [1, null]}));
    }

    #[test]
    fn desired_patch_bumps_versions_metadata_and_notifies_with_nulls_kept() {
        let mut twin = Twin::new(NOW);
        twin.patch(None, Some(&obj(json!({"a": {"b": 1}, "c": 2}))), NOW).unwrap();
        let n = twin.patch(None, Some(&obj(json!({"a": {"b": null}, "$version": 7}))), LATER).unwrap().unwrap();
        assert_eq!(n.version, 3);
        assert_eq!(n.body, json!({"a": {"b": null}, "$version": 3}));
        assert_eq!(twin.version, 3);
        assert_eq!(twin.desired, obj(json!({"a": {}, "c": 2})));
        let meta = &twin.desired_metadata;
        assert_eq!(meta["$lastUpdated"], json!(LATER));
        assert_eq!(meta["$lastUpdatedVersion"], json!(3));
        assert_eq!(meta["c"], json!({"$lastUpdated": NOW, "$lastUpdatedVersion": 2}));
        assert_eq!(meta["a"], json!({"$lastUpdated": LATER, "$lastUpdatedVersion": 3}));
        let props = twin.service_properties();
        assert_eq!(props["desired"]["$version"], json!(3));
        assert_eq!(props["desired"]["$metadata"]["c"]["$lastUpdatedVersion"], json!(2));
        assert_eq!(twin.device_view(), json!({"desired": {"a": {}, "c": 2, "$version": 3}, "reported": {"$version": 1}}));
    }

    #[test]
    fn tags_only_patch_does_not_touch_desired_version() {
        let mut twin = Twin::new(NOW);
        let n = twin.patch(Some(&obj(json!({"site": {"floor": 2}}))), None, NOW).unwrap();
        assert!(n.is_none());
        assert_eq!(twin.desired_version, 1);
        assert_eq!(twin.version, 2);
        assert_ne!(twin.etag(), Twin::new(NOW).etag());
    }

    #[test]
    fn replace_swaps_tags_and_desired_whole() {
        let mut twin = Twin::new(NOW);
        twin.patch(Some(&obj(json!({"old": 1}))), Some(&obj(json!({"x": 1}))), NOW).unwrap();
        twin.patch_reported(&obj(json!({"r": 1})), NOW).unwrap();
        let n = twin.replace(&obj(json!({"new": 1})), &obj(json!({"y": {"z": 2}})), LATER).unwrap();
        assert_eq!(twin.tags, obj(json!({"new": 1})));
        assert_eq!(twin.desired, obj(json!({"y": {"z": 2}})));
        assert_eq!(twin.reported, obj(json!({"r": 1})));
        assert_eq!(n.body, json!({"y": {"z": 2}, "$version": 3}));
        assert!(twin.desired_metadata.get("x").is_none());
        assert_eq!(twin.desired_metadata["y"]["z"]["$lastUpdatedVersion"], json!(3));
    }

    #[test]
    fn reported_patch_bumps_reported_version_only() {
        let mut twin = Twin::new(NOW);
        assert_eq!(twin.patch_reported(&obj(json!({"t": 21.5})), LATER).unwrap(), 2);
        assert_eq!(twin.desired_version, 1);
        assert_eq!(twin.reported_metadata["t"], json!({"$lastUpdated": LATER}));
        assert!(twin.reported_metadata.get("$lastUpdatedVersion").is_none());
    }

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!({ "k": v });
        }
        v
    }

    #[test]
    fn every_limit_is_400004_and_leaves_the_twin_unchanged() {
        let big = "x".repeat(4000);
        let bad_patches = vec![
            ("desired", json!({"s": "x".repeat(limits::MAX_TWIN_STRING_BYTES + 1)})),
            ("desired", json!({ "k".repeat(limits::MAX_TWIN_KEY_BYTES + 1): 1 })),
            ("desired", json!({"a.b": 1})),
            ("desired", json!({"a$": 1})),
            ("desired", json!({"a b": 1})),
            ("desired", json!({"a\u{1}": 1})),
            ("desired", nested(limits::MAX_TWIN_DEPTH + 1)),
            ("desired", Value::Object((0..9).map(|i| (format!("k{i}"), json!(big))).collect())),
            ("tags", Value::Object((0..3).map(|i| (format!("k{i}"), json!(big))).collect())),
        ];
        for (section, patch) in bad_patches {
            let mut twin = Twin::new(NOW);
            twin.patch(Some(&obj(json!({"keep": 1}))), Some(&obj(json!({"keep": 1}))), NOW).unwrap();
            let before = twin.clone();
            let p = obj(patch);
            let err = if section == "tags" {
                twin.patch(Some(&p), None, LATER).unwrap_err()
            } else {
                twin.patch(None, Some(&p), LATER).unwrap_err()
            };
            assert_eq!((err.status, err.code), (400, 400004), "{section}");
            assert_eq!(twin, before);
            if section == "desired" {
                assert_eq!(twin.patch_reported(&p, LATER).unwrap_err().code, 400004);
                assert_eq!(twin.replace(&Section::new(), &p, LATER).unwrap_err().code, 400004);
                assert_eq!(twin, before);
            }
        }
        let mut twin = Twin::new(NOW);
        assert!(twin.patch(None, Some(&obj(nested(limits::MAX_TWIN_DEPTH))), NOW).is_ok());
    }
}
