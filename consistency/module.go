package consistency

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/go-delve/delve/pkg/dwarf/frame"
)

// ErrNoCFI means no call frame information covers a PC.
var ErrNoCFI = errors.New("no call frame information")

// maxCachedRows bounds the per-module cache of evaluated CFI rows.
const maxCachedRows = 1 << 16

// Module holds the parsed CFI of one mapped ELF image.
type Module struct {
	name    string
	bias    uint64
	machine elf.Machine
	text    []span // executable segments, runtime addresses, sorted
	fdes    frame.FrameDescriptionEntries

	mu   sync.Mutex
	rows map[uint64]*row
	cies map[*frame.CommonInformationEntry]*cieState
}

type span struct{ lo, hi uint64 }

type cieState struct {
	initial map[uint64]frame.DWRule
	info    cfaInfo
	err     error
}

// LoadModule parses .eh_frame and .debug_frame of the ELF file at path,
// relocated by bias (runtime address = link-time address + bias).
func LoadModule(path string, bias uint64) (*Module, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return NewModule(f, path, bias)
}

// LoadModuleMapping is LoadModule for a file mapped at mapStart from file
// offset mapOffset, as listed in /proc/PID/maps.
func LoadModuleMapping(path string, mapStart, mapOffset uint64) (*Module, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bias, err := MappingBias(f, mapStart, mapOffset)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewModule(f, path, bias)
}

// MappingBias computes the load bias of an ELF image of which file offset
// mapOffset is mapped at mapStart, from the PT_LOAD holding that offset.
func MappingBias(r io.ReaderAt, mapStart, mapOffset uint64) (uint64, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return 0, err
	}
	page := uint64(os.Getpagesize())
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		start := p.Off &^ (page - 1)
		end := p.Off + max(p.Filesz, 1)
		if mapOffset < start || mapOffset >= end {
			continue
		}
		// Within a segment vaddr-offset is constant, and the kernel maps
		// whole pages, so mapStart is the vaddr of mapOffset plus bias.
		return mapStart - (p.Vaddr - p.Off + mapOffset), nil
	}
	return 0, fmt.Errorf("no PT_LOAD segment holds file offset %#x", mapOffset)
}

// NewModule parses the CFI of the ELF image read from r (a file, or an
// image copied from target memory such as the vDSO). name labels errors.
func NewModule(r io.ReaderAt, name string, bias uint64) (*Module, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	m := newModule(name, bias, ef.Machine)
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Memsz > 0 {
			m.text = append(m.text, span{p.Vaddr + bias, p.Vaddr + p.Memsz + bias})
		}
	}
	sort.Slice(m.text, func(i, j int) bool { return m.text[i].lo < m.text[j].lo })

	ptrSize := 8
	if ef.Class == elf.ELFCLASS32 {
		ptrSize = 4
	}
	var fdes frame.FrameDescriptionEntries
	if sec := ef.Section(".debug_frame"); sec != nil && sec.Type != elf.SHT_NOBITS {
		data, err := sec.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: .debug_frame: %w", name, err)
		}
		fe, err := parseCFI(data, ef.ByteOrder, bias, ptrSize, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: .debug_frame: %w", name, err)
		}
		// The parser ignores the address_size fields added in version 4,
		// so such entries would be decoded wrongly.
		kept := fe[:0]
		for _, e := range fe {
			if e.CIE != nil && (e.CIE.Version == 1 || e.CIE.Version == 3) {
				kept = append(kept, e)
			}
		}
		fdes = fdes.Append(kept)
	}
	if sec := ef.Section(".eh_frame"); sec != nil && sec.Type != elf.SHT_NOBITS && sec.Addr != 0 {
		data, err := sec.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: .eh_frame: %w", name, err)
		}
		fe, err := parseCFI(data, ef.ByteOrder, bias, ptrSize, sec.Addr)
		if err != nil {
			return nil, fmt.Errorf("%s: .eh_frame: %w", name, err)
		}
		// Append also sorts, which FDEForPC's binary search needs.
		fdes = fdes.Append(fe)
	} else if len(fdes) > 0 {
		fdes = fdes.Append(nil)
	}
	if ef.Machine == elf.EM_AARCH64 {
		hideNegateRAState(fdes)
	}
	m.fdes = fdes
	if len(m.text) == 0 && len(fdes) > 0 {
		m.text = []span{{fdes[0].Begin(), fdes[len(fdes)-1].End()}}
	}
	return m, nil
}

func newModule(name string, bias uint64, machine elf.Machine) *Module {
	return &Module{
		name:    name,
		bias:    bias,
		machine: machine,
		rows:    map[uint64]*row{},
		cies:    map[*frame.CommonInformationEntry]*cieState{},
	}
}

func parseCFI(data []byte, order binary.ByteOrder, bias uint64, ptrSize int, ehFrameAddr uint64) (fdes frame.FrameDescriptionEntries, err error) {
	defer func() {
		if p := recover(); p != nil {
			fdes, err = nil, fmt.Errorf("malformed CFI: %v", p)
		}
	}()
	fdes, err = frame.Parse(data, order, bias, ptrSize, ehFrameAddr)
	for _, e := range fdes {
		if e.CIE == nil {
			return nil, errors.New("FDE without CIE")
		}
	}
	return fdes, err
}

// Name returns the path or label the module was loaded from.
func (m *Module) Name() string { return m.name }

// Bias returns the load bias.
func (m *Module) Bias() uint64 { return m.bias }

// FDEs returns how many frame description entries the module has.
func (m *Module) FDEs() int { return len(m.fdes) }

// Contains reports whether pc lies in one of the module's executable
// segments.
func (m *Module) Contains(pc uint64) bool {
	i := sort.Search(len(m.text), func(i int) bool { return m.text[i].hi > pc })
	return i < len(m.text) && m.text[i].lo <= pc
}

// Modules is the set of modules of one process.
type Modules struct {
	spans []modSpan
	mods  []*Module
}

type modSpan struct {
	span
	m *Module
}

// NewModules indexes modules by their executable segments. Nil entries are
// skipped.
func NewModules(ms ...*Module) *Modules {
	s := &Modules{}
	for _, m := range ms {
		if m == nil {
			continue
		}
		s.mods = append(s.mods, m)
		for _, t := range m.text {
			s.spans = append(s.spans, modSpan{t, m})
		}
	}
	sort.Slice(s.spans, func(i, j int) bool { return s.spans[i].lo < s.spans[j].lo })
	return s
}

// Lookup returns the module whose code contains pc, or nil.
func (s *Modules) Lookup(pc uint64) *Module {
	if s == nil {
		return nil
	}
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].lo > pc }) - 1
	if i >= 0 && pc < s.spans[i].hi {
		return s.spans[i].m
	}
	return nil
}

// Modules returns the indexed modules.
func (s *Modules) Modules() []*Module {
	if s == nil {
		return nil
	}
	return s.mods
}

// ruleKind is a register rule reduced to what the unwinder evaluates.
type ruleKind uint8

const (
	ruleUnspecified ruleKind = iota // no rule: callee-saved keep their value
	ruleUndefined
	ruleSame
	ruleOffset    // saved at CFA+off
	ruleValOffset // value is CFA+off
	ruleRegister  // value is in register reg
	ruleExpr      // saved at the address computed by expr (CFA pushed)
	ruleValExpr   // value computed by expr (CFA pushed)
	ruleCannot    // anything else
)

type regRule struct {
	reg  uint64 // the register the rule is for
	kind ruleKind
	src  uint64 // ruleRegister: the source register
	off  int64
	expr []byte
}

// row is one evaluated row of a CFI table.
type row struct {
	err       error
	cfaOK     bool // CFA is register+offset, or an expression
	cfaIsExpr bool
	cfaReg    uint64
	cfaOff    int64
	cfaExpr   []byte
	// signal marks a signal trampoline's frame: its caller was
	// interrupted, not calling, so the caller's PC is exact.
	signal bool
	raReg  uint64
	ra     regRule
	regs   []regRule
}

// row returns the CFI row for pc, cached.
func (m *Module) row(pc uint64) *row {
	m.mu.Lock()
	r, ok := m.rows[pc]
	m.mu.Unlock()
	if ok {
		return r
	}
	r = m.compileRow(pc)
	m.mu.Lock()
	if len(m.rows) < maxCachedRows {
		m.rows[pc] = r
	}
	m.mu.Unlock()
	return r
}

func (m *Module) compileRow(pc uint64) (r *row) {
	defer func() {
		if p := recover(); p != nil {
			r = &row{err: fmt.Errorf("%s: malformed CFI for pc %#x: %v", m.name, pc, p)}
		}
	}()
	fde, err := m.fdes.FDEForPC(pc)
	if err != nil {
		return &row{err: fmt.Errorf("%s: pc %#x: %w", m.name, pc, ErrNoCFI)}
	}
	cie := m.cieState(fde.CIE)
	if cie.err != nil {
		return &row{err: cie.err}
	}
	fc, err := fde.EstablishFrame(pc)
	if err != nil {
		return &row{err: fmt.Errorf("%s: CFI for pc %#x: %w", m.name, pc, err)}
	}
	info := scanCFA(fde.Instructions)
	info.merge(cie.info)
	if info.bad {
		return &row{err: fmt.Errorf("%s: undecodable CFI for pc %#x", m.name, pc)}
	}

	r = &row{raReg: fc.RetAddrReg, signal: strings.ContainsRune(fde.CIE.Augmentation, 'S')}
	switch fc.CFA.Rule {
	case frame.RuleCFA:
		r.cfaOK, r.cfaReg, r.cfaOff = true, fc.CFA.Reg, fc.CFA.Offset
	case frame.RuleExpression:
		r.cfaOK, r.cfaIsExpr, r.cfaExpr = true, true, bytes.Clone(fc.CFA.Expression)
	}
	r.ra = regRule{reg: fc.RetAddrReg, kind: ruleUnspecified}
	for reg, rule := range fc.Regs {
		rr, ok := convertRule(reg, rule, cie, &info)
		if !ok {
			continue
		}
		if reg == fc.RetAddrReg {
			r.ra = rr
		} else if reg < MaxRegs {
			r.regs = append(r.regs, rr)
		}
	}
	sort.Slice(r.regs, func(i, j int) bool { return r.regs[i].reg < r.regs[j].reg })
	return r
}

// convertRule translates a frame package rule, undoing its DW_CFA_restore
// behaviour. ok is false when the register has no rule at all.
func convertRule(reg uint64, rule frame.DWRule, cie *cieState, info *cfaInfo) (regRule, bool) {
	rr := regRule{reg: reg}
	if rule.Rule == frame.RuleUndefined && !info.hasUndefined(reg) {
		// Not from DW_CFA_undefined, so it came from a restore: the true
		// rule is the CIE's initial one.
		init, ok := cie.initial[reg]
		if !ok {
			return rr, false
		}
		rule = init
	} else if rule.Rule == frame.RuleUndefined && info.hasRestore(reg) {
		// Both opcodes appear; we cannot tell which one applies here.
		rr.kind = ruleCannot
		return rr, true
	}
	switch rule.Rule {
	case frame.RuleUndefined:
		rr.kind = ruleUndefined
	case frame.RuleSameVal:
		rr.kind = ruleSame
	case frame.RuleOffset:
		rr.kind, rr.off = ruleOffset, rule.Offset
	case frame.RuleValOffset:
		if info.valOffset {
			rr.kind = ruleCannot // the parser left it unscaled
		} else {
			rr.kind, rr.off = ruleValOffset, rule.Offset
		}
	case frame.RuleRegister:
		rr.kind, rr.src = ruleRegister, rule.Reg
	case frame.RuleExpression:
		rr.kind, rr.expr = ruleExpr, bytes.Clone(rule.Expression)
	case frame.RuleValExpression:
		rr.kind, rr.expr = ruleValExpr, bytes.Clone(rule.Expression)
	default:
		rr.kind = ruleCannot
	}
	return rr, true
}

// cieState evaluates a CIE's initial instructions once.
func (m *Module) cieState(cie *frame.CommonInformationEntry) *cieState {
	m.mu.Lock()
	s, ok := m.cies[cie]
	m.mu.Unlock()
	if ok {
		return s
	}
	s = &cieState{info: scanCFA(cie.InitialInstructions)}
	func() {
		defer func() {
			if p := recover(); p != nil {
				s.err = fmt.Errorf("%s: malformed CIE: %v", m.name, p)
			}
		}()
		// An FDE with no instructions yields exactly the CIE's rules.
		fc, err := (&frame.FrameDescriptionEntry{CIE: cie}).EstablishFrame(0)
		if err != nil {
			s.err = fmt.Errorf("%s: CIE: %w", m.name, err)
			return
		}
		s.initial = fc.Regs
	}()
	if s.info.hasRestoreAny() {
		s.err = fmt.Errorf("%s: CIE restores registers", m.name)
	}
	m.mu.Lock()
	m.cies[cie] = s
	m.mu.Unlock()
	return s
}

func (c *cfaInfo) hasRestoreAny() bool { return c.restored != 0 || c.bigRest }
