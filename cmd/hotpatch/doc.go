// Command hotpatch puts fixes into running Linux programs and shared
// libraries without restarting them.
//
//	hotpatch build   --src DIR --diff FIX.patch --target PATH [--build CMD] -o FILE.hp
//	hotpatch pack    --target PATH --replace OLD=NEW [--id ID] -o FILE.hp OBJECT.o
//	hotpatch key generate -o NAME
//	hotpatch sign    --key NAME.key FILE.hp
//	hotpatch verify  [--trust NAME.pub ...] FILE.hp
//	hotpatch apply   (--pid PID | --all) [--timeout 10s] [--trust NAME.pub ...] [--allow-unsigned] FILE.hp
//	hotpatch revert  --pid PID (ID | --all)
//	hotpatch status  --pid PID [--json]
//	hotpatch inspect FILE.hp [--json]
package main
