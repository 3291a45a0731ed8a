# Warn on every replacement, allowed or not: a replaced resource loses its identity (IDs,
# addresses, data on disk) even when the stack allows it.
package tidemark.replace

import data.tidemark.lib.plan
import rego.v1

warn contains msg if {
	some address in plan.replaces
	msg := sprintf("%s will be replaced (deleted, then created)", [address])
}
