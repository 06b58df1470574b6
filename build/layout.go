package build

import (
	"debug/dwarf"
	"fmt"
	"sort"
	"strings"
)

// typeInfo is what the builder needs of an object's debug information:
// each named structure's layout, and which structures the object's
// variables and functions use (through pointers, arrays and members too).
type typeInfo struct {
	layouts map[string]string          // "struct config" -> its definition with offsets
	varUses map[string]map[string]bool // variable name -> structures it reaches
	fnUses  map[string]map[string]bool // function name -> structures its parameters and result reach
}

func readTypes(o *object) (*typeInfo, error) {
	d, err := o.raw.DWARF()
	if err != nil {
		return nil, err
	}
	ti := &typeInfo{layouts: map[string]string{}, varUses: map[string]map[string]bool{}, fnUses: map[string]map[string]bool{}}
	reach := func(t dwarf.Type) map[string]bool {
		out := map[string]bool{}
		var walk func(t dwarf.Type, depth int)
		walkStruct := func(t *dwarf.StructType, key string, depth int) {
			if t.Incomplete || out[key] {
				return
			}
			out[key] = true
			ti.layouts[key] = layoutOf(t)
			for _, f := range t.Field {
				walk(f.Type, depth+1)
			}
		}
		walk = func(t dwarf.Type, depth int) {
			if t == nil || depth > 32 {
				return
			}
			switch t := t.(type) {
			case *dwarf.StructType:
				if t.StructName != "" {
					walkStruct(t, t.Kind+" "+t.StructName, depth)
				}
			case *dwarf.PtrType:
				walk(t.Type, depth+1)
			case *dwarf.TypedefType:
				// typedef struct { ... } name_t: the typedef names it.
				u := t.Type
				for q, ok := u.(*dwarf.QualType); ok; q, ok = u.(*dwarf.QualType) {
					u = q.Type
				}
				if st, ok := u.(*dwarf.StructType); ok && st.StructName == "" {
					walkStruct(st, "typedef "+t.Name, depth)
					return
				}
				walk(t.Type, depth+1)
			case *dwarf.QualType:
				walk(t.Type, depth+1)
			case *dwarf.ArrayType:
				walk(t.Type, depth+1)
			}
		}
		walk(t, 0)
		return out
	}
	r := d.Reader()
	var fn string
	var fnDepth int
	depth := 0
	for {
		e, err := r.Next()
		if err != nil {
			return nil, err
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			if fn != "" && depth < fnDepth {
				fn = ""
			}
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch e.Tag {
		case dwarf.TagStructType, dwarf.TagClassType, dwarf.TagUnionType, dwarf.TagTypedef:
			if name != "" {
				if t, err := d.Type(e.Offset); err == nil {
					reach(t)
				}
			}
		case dwarf.TagVariable:
			if e.Val(dwarf.AttrLocation) != nil {
				if off, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
					if t, err := d.Type(off); err == nil {
						link, _ := e.Val(dwarf.AttrLinkageName).(string)
						if link == "" {
							link = name
						}
						ti.varUses[link] = reach(t)
					}
				}
			}
		case dwarf.TagSubprogram:
			// Not only DIEs with code: a function also inlined in its file
			// (or split into hot and cold parts) has its name, result and
			// parameter types in an abstract DIE without an address.
			link, _ := e.Val(dwarf.AttrLinkageName).(string)
			if link == "" {
				link = name
			}
			if e.Children && link != "" {
				fn, fnDepth = link, depth+1
				uses := ti.fnUses[fn]
				if uses == nil {
					uses = map[string]bool{}
				}
				if off, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
					if t, err := d.Type(off); err == nil {
						for k := range reach(t) {
							uses[k] = true
						}
					}
				}
				ti.fnUses[fn] = uses
			}
		case dwarf.TagFormalParameter:
			if fn != "" && depth == fnDepth {
				if off, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
					if t, err := d.Type(off); err == nil {
						for k := range reach(t) {
							ti.fnUses[fn][k] = true
						}
					}
				}
			}
		}
		if e.Children {
			depth++
		}
	}
	return ti, nil
}

// layoutOf describes a structure by its size and each member's name,
// offset, size and type, nested structures by name only.
func layoutOf(t *dwarf.StructType) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s size %d {", t.Kind, t.StructName, t.ByteSize)
	for _, f := range t.Field {
		fmt.Fprintf(&b, " %s@%d:%s/%d", f.Name, f.ByteOffset, f.Type.String(), f.Type.Size())
		if f.BitSize != 0 {
			fmt.Fprintf(&b, ":%d+%d", f.DataBitOffset, f.BitSize)
		}
	}
	b.WriteString(" }")
	return b.String()
}

// checkLayouts refuses a changed structure layout that existing data of
// the unit (its global and static variables) or a replaced function's
// parameters and result use: objects the running process already has
// keep the old layout.
func (u *unit) checkLayouts() error {
	if u.orig == nil {
		return nil
	}
	ot, err1 := readTypes(u.orig)
	pt, err2 := readTypes(u.patched)
	if err1 != nil || err2 != nil {
		return nil // no debug information: nothing to compare
	}
	var changed []string
	for k, old := range ot.layouts {
		if nw, ok := pt.layouts[k]; ok && nw != old {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	for _, k := range changed {
		var users []string
		for v, uses := range ot.varUses {
			if uses[k] {
				users = append(users, "variable "+v)
			}
		}
		for _, p := range u.changed {
			// A clone (foo.isra.0) is described under its function's name.
			if o := u.corr[p]; o != nil && (ot.fnUses[o.name][k] || ot.fnUses[cloneSuffix.ReplaceAllString(o.name, "")][k]) {
				users = append(users, "function "+o.name)
			}
		}
		if len(users) == 0 {
			continue
		}
		sort.Strings(users)
		u.refusals = append(u.refusals, Refusal{Kind: "struct-layout", Symbol: k,
			Reason: fmt.Sprintf("layout changes (%s -> %s); existing data of the old layout is used by %s", ot.layouts[k], pt.layouts[k], strings.Join(users, ", "))})
	}
	return nil
}
