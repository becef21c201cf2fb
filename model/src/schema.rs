//! JSON Schema export of every public contract type, for the UI's generated TypeScript types.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, schema_for};

use crate::{api, envelope, error, record};

/// Every exported type's schema, keyed by type name.
pub fn all() -> BTreeMap<&'static str, Schema> {
    fn entry<T: JsonSchema>(name: &'static str) -> (&'static str, Schema) {
        (name, schema_for!(T))
    }
    BTreeMap::from([
        entry::<envelope::Envelope>("Envelope"),
        entry::<envelope::Actor>("Actor"),
        entry::<envelope::EventKind>("EventKind"),
        entry::<envelope::DeviceId>("DeviceId"),
        entry::<envelope::Subject>("Subject"),
        entry::<record::Collection>("Collection"),
        entry::<record::Task>("Task"),
        entry::<record::TaskStatus>("TaskStatus"),
        entry::<record::Priority>("Priority"),
        entry::<record::CalendarEvent>("CalendarEvent"),
        entry::<record::Note>("Note"),
        entry::<record::MemoryFact>("MemoryFact"),
        entry::<api::ChatRequest>("ChatRequest"),
        entry::<api::ChatResponse>("ChatResponse"),
        entry::<api::ChatContext>("ChatContext"),
        entry::<api::ExecutionPlan>("ExecutionPlan"),
        entry::<api::PlanStep>("PlanStep"),
        entry::<api::PlanAction>("PlanAction"),
        entry::<api::PluginManifest>("PluginManifest"),
        entry::<api::PermissionRequest>("PermissionRequest"),
        entry::<api::PermissionGrant>("PermissionGrant"),
        entry::<api::BackupMetadata>("BackupMetadata"),
        entry::<api::BillingTier>("BillingTier"),
        entry::<error::ErrorCode>("ErrorCode"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_exports_a_schema_with_its_fields() {
        let schemas = all();
        let text = |name: &str| serde_json::to_string(&schemas[name]).unwrap();
        for field in ["\"v\"", "\"kind\"", "\"actor\"", "\"device\"", "\"correlation\"", "\"causation\""] {
            assert!(text("Envelope").contains(field), "Envelope lacks {field}");
        }
        for field in
            ["\"title\"", "\"description\"", "\"status\"", "\"priority\"", "\"due\"", "\"tags\"", "\"project\""]
        {
            assert!(text("Task").contains(field), "Task lacks {field}");
        }
        assert!(text("PlanAction").contains("send_notification"));
        assert!(text("BillingTier").contains("power"));
        assert!(text("ErrorCode").contains("chunk.corrupt"));
        assert_eq!(schemas.len(), 24);
    }
}
