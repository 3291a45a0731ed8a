package tidemark.replace_test

import data.tidemark.replace
import rego.v1

change(address, actions) := {"address": address, "mode": "managed", "change": {"actions": actions}}

test_replacement_warns_even_when_destroy_is_allowed if {
	inp := {
		"resource_changes": [change("a.x", ["delete", "create"]), change("a.y", ["delete"])],
		"tidemark": {"stack": {"tags": ["allow-destroy"]}},
	}
	replace.warn == {"a.x will be replaced (deleted, then created)"} with input as inp
}

test_no_replacement_no_warning if {
	count(replace.warn) == 0 with input as {"resource_changes": [change("a.x", ["create"])]}
}

test_a_plan_without_changes_has_no_warning if {
	count(replace.warn) == 0 with input as {"format_version": "0.2"}
}
