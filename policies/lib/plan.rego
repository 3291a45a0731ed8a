# Helpers over a terraform plan JSON (`terraform show -json PLAN`) shared by the shipped
# policies. Replacements are their own kind: a change whose actions are delete-then-create or
# create-then-delete is a replacement, not a delete.
package tidemark.lib.plan

import rego.v1

# Managed resource changes (data-source reads are not changes to infrastructure).
managed_changes contains change if {
	some change in input.resource_changes
	change.mode == "managed"
}

# Addresses of resources the plan deletes outright.
deletes contains change.address if {
	some change in managed_changes
	change.change.actions == ["delete"]
}

# Addresses of resources the plan deletes and re-creates.
replaces contains change.address if {
	some change in managed_changes
	is_replace(change.change.actions)
}

is_replace(actions) if actions == ["delete", "create"]

is_replace(actions) if actions == ["create", "delete"]

# Everything the plan destroys: deletions and replacements.
destroyed := deletes | replaces

# input.tidemark, or {} when the plan is checked outside Tidemark (e.g. plain conftest).
tidemark := object.get(input, "tidemark", {})

stack := object.get(tidemark, "stack", {})

stack_name := object.get(stack, "name", "(unknown)")

stack_tags := object.get(stack, "tags", [])

# Policy parameters from the server config (input.tidemark.config).
config := object.get(tidemark, "config", {})
