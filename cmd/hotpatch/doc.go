// Command hotpatch puts fixes into running Linux programs and shared
// libraries without restarting them.
//
//	hotpatch pack    --target PATH --replace OLD=NEW [--id ID] -o FILE.hp OBJECT.o
//	hotpatch apply   --pid PID [--timeout 10s] [--allow-unsigned] FILE.hp
//	hotpatch revert  --pid PID (ID | --all)
//	hotpatch status  --pid PID [--json]
//	hotpatch inspect FILE.hp [--json]
package main
