package tidemark.destroy_test

import data.tidemark.destroy
import rego.v1

change(address, actions) := {"address": address, "mode": "managed", "type": "null_resource", "change": {"actions": actions}}

run(changes, tags) := {
	"resource_changes": changes,
	"tidemark": {"run_kind": "plan", "stack": {"name": "net", "path": "stacks/net", "tags": tags}},
}

test_create_update_and_no_op_pass if {
	inp := run([change("a.x", ["create"]), change("a.y", ["update"]), change("a.z", ["no-op"])], [])
	count(destroy.deny) == 0 with input as inp
}

test_delete_is_denied if {
	inp := run([change("null_resource.gone", ["delete"])], [])
	destroy.deny == {"null_resource.gone would be deleted: stack net does not allow destroying resources (tag it \"allow-destroy\" to allow)"} with input as inp
}

test_replace_is_denied_in_either_order if {
	inp := run([change("a.x", ["delete", "create"]), change("module.m.a.y", ["create", "delete"])], ["prod"])
	msgs := destroy.deny with input as inp
	count(msgs) == 2
	every msg in msgs {
		contains(msg, "would be replaced")
	}
}

test_module_resources_count if {
	inp := run([change("module.child.null_resource.inner", ["delete"])], [])
	some msg in destroy.deny with input as inp
	startswith(msg, "module.child.null_resource.inner would be deleted")
}

test_opt_in_tag_allows_destroy if {
	inp := run([change("a.x", ["delete"]), change("a.y", ["delete", "create"])], ["prod", "allow-destroy"])
	count(destroy.deny) == 0 with input as inp
}

test_data_source_reads_are_ignored if {
	inp := run([{"address": "data.a.x", "mode": "data", "change": {"actions": ["read"]}}], [])
	count(destroy.deny) == 0 with input as inp
}

test_plan_without_tidemark_input_is_still_checked if {
	msgs := destroy.deny with input as {"resource_changes": [change("a.x", ["delete"])]}
	count(msgs) == 1
}
