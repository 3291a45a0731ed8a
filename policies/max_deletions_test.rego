package tidemark.max_deletions_test

import data.tidemark.max_deletions
import rego.v1

deletes(n) := [{"address": sprintf("a.r%d", [i]), "mode": "managed", "change": {"actions": ["delete"]}} | some i in numbers.range(1, n)]

replaces(n) := [{"address": sprintf("b.r%d", [i]), "mode": "managed", "change": {"actions": ["delete", "create"]}} | some i in numbers.range(1, n)]

with_config(changes, config) := {"resource_changes": changes, "tidemark": {"config": config}}

test_ten_deletions_pass_by_default if {
	count(max_deletions.deny) == 0 with input as with_config(deletes(10), {})
}

test_eleven_deletions_are_denied_by_default if {
	max_deletions.deny == {"plan destroys 11 resources (11 deleted, 0 replaced), more than the 10 allowed in one plan (config max_deletions)"} with input as with_config(deletes(11), {})
}

test_replacements_count_as_deletions if {
	max_deletions.deny == {"plan destroys 3 resources (1 deleted, 2 replaced), more than the 2 allowed in one plan (config max_deletions)"} with input as with_config(array.concat(deletes(1), replaces(2)), {"max_deletions": 2})
}

test_zero_allows_none if {
	count(max_deletions.deny) == 1 with input as with_config(deletes(1), {"max_deletions": 0})
}

test_configured_limit_is_used if {
	count(max_deletions.deny) == 0 with input as with_config(deletes(20), {"max_deletions": 20})
}

test_a_bad_config_value_denies if {
	max_deletions.deny == {"config max_deletions must be a number, not \"many\""} with input as with_config([], {"max_deletions": "many"})
}
