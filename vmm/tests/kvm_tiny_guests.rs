//! The vmm library against the host's real KVM, with tiny guests these tests
//! assemble themselves: a few bytes of 16-bit real-mode code loaded at
//! `CODE_ADDR`, entered with CS base 0 and RIP pointing at them.
//!
//! The VMs are made without the in-kernel IRQ chip, so `hlt` exits to user
//! space and every vCPU starts running at once (no INIT/SIPI). Nothing here is
//! skipped: where `/dev/kvm` cannot be opened the tests fail and say so. Every
//! run is bounded by a watchdog that stops the vCPU threads and fails the test
//! rather than hanging.

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use devices::bus::BusDevice;
    use devices::interrupt::EventFdTrigger;
    use devices::legacy::{Serial, I8042};
    use event_manager::SubscriberOps;
    use kvm_ioctls::{Kvm, VcpuFd};
    use vm_memory::{Bytes, GuestAddress};

    use vmm::event_loop::{Controller, EventManager, ExitReason, ExitState};
    use vmm::layout::{I8042_PORT, MMIO_GAP_START, SERIAL_PORT};
    use vmm::memory::GuestMemory;
    use vmm::vcpu::exit::{GuestStop, IoBuses};
    use vmm::vcpu::{install_kick_handler, Vcpu, VcpuEnd, VcpuHandle};
    use vmm::vm::Vm;
    use vmm::ExitReport;

    /// Where the guest code goes and where RIP starts.
    const CODE_ADDR: u64 = 0x1000;
    /// Guest RAM: 1 MiB, so everything from 0x10_0000 up is not RAM.
    const MEM_MIB: u64 = 1;
    /// A port nothing else uses, where guests report values to the test.
    const REPORT_PORT: u64 = 0x500;
    /// How long a tiny guest may take before the test calls it hung.
    const WATCHDOG: Duration = Duration::from_secs(1);

    // ---- a few instruction encodings (16-bit code) ----

    /// `mov dx, imm16`
    fn mov_dx(v: u16) -> Vec<u8> {
        let [lo, hi] = v.to_le_bytes();
        vec![0xba, lo, hi]
    }
    /// `mov al, imm8`
    fn mov_al(v: u8) -> Vec<u8> {
        vec![0xb0, v]
    }
    /// `out dx, al`
    const OUT_DX_AL: u8 = 0xee;
    /// `hlt`
    const HLT: u8 = 0xf4;
    /// `jmp $` (spin in place)
    const JMP_SELF: [u8; 2] = [0xeb, 0xfe];

    /// Code that writes `bytes` one at a time to `port`, then halts.
    fn out_bytes_then_hlt(port: u16, bytes: &[u8]) -> Vec<u8> {
        let mut code = mov_dx(port);
        for &b in bytes {
            code.extend(mov_al(b));
            code.push(OUT_DX_AL);
        }
        code.push(HLT);
        code
    }

    // ---- test devices ----

    /// A console writer the test can read.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn contents(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    /// What a guest did to a [`Recorder`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Access {
        Read { offset: u64, len: usize },
        Write { offset: u64, data: Vec<u8> },
    }

    /// A bus device that logs every access and answers reads with `answer`'s
    /// bytes (little-endian, as wide as the access).
    struct Recorder {
        log: Vec<Access>,
        answer: u64,
    }

    impl Recorder {
        fn shared(answer: u64) -> Arc<Mutex<Recorder>> {
            Arc::new(Mutex::new(Recorder {
                log: Vec::new(),
                answer,
            }))
        }
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.log.push(Access::Read {
                offset,
                len: data.len(),
            });
            for (d, s) in data.iter_mut().zip(self.answer.to_le_bytes()) {
                *d = s;
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.log.push(Access::Write {
                offset,
                data: data.to_vec(),
            });
        }
    }

    // ---- the VM ----

    fn open_kvm() -> Kvm {
        Kvm::new().unwrap_or_else(|e| {
            panic!(
                "cannot open /dev/kvm ({e}): these tests run tiny guests on the host's KVM \
                 and are never skipped; give this user access to /dev/kvm"
            )
        })
    }

    /// A VM with 1 MiB of RAM, no in-kernel IRQ chip, and `code` at `CODE_ADDR`.
    struct TinyVm {
        // Field order is drop order: the VM goes before its memory.
        vm: Vm,
        _mem: GuestMemory,
        _kvm: Kvm,
    }

    impl TinyVm {
        fn new(code: &[u8]) -> Self {
            install_kick_handler().expect("install the vCPU kick handler");
            let kvm = open_kvm();
            let mem = vmm::memory::create(MEM_MIB).expect("guest memory");
            mem.write_slice(code, GuestAddress(CODE_ADDR))
                .expect("load the guest code");
            let vm = Vm::new(&kvm, &mem, false).expect("create the VM without an IRQ chip");
            TinyVm {
                vm,
                _mem: mem,
                _kvm: kvm,
            }
        }

        /// vCPU `id` in real mode at `CODE_ADDR`; `tweak` may preset registers.
        fn real_mode_vcpu(
            &self,
            id: u8,
            tweak: impl FnOnce(&mut kvm_bindings::kvm_regs, &mut kvm_bindings::kvm_sregs),
        ) -> Vcpu {
            let fd: VcpuFd = self
                .vm
                .fd()
                .create_vcpu(u64::from(id))
                .unwrap_or_else(|e| panic!("KVM_CREATE_VCPU {id}: {e}"));
            let mut sregs = fd.get_sregs().expect("KVM_GET_SREGS");
            // Out of reset CS is f000:fff0 with base 0xffff0000; make it 0000.
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            let mut regs = kvm_bindings::kvm_regs {
                rip: CODE_ADDR,
                rflags: 0x2,
                rsp: 0x0ffe,
                ..Default::default()
            };
            tweak(&mut regs, &mut sregs);
            fd.set_sregs(&sregs).expect("KVM_SET_SREGS");
            fd.set_regs(&regs).expect("KVM_SET_REGS");
            Vcpu::from_fd(id, fd)
        }
    }

    /// Running vCPU threads whose ends arrive on a channel.
    struct Running {
        handles: Vec<VcpuHandle>,
        stop: Arc<AtomicBool>,
        ends: Receiver<(u8, VcpuEnd)>,
    }

    impl Running {
        /// Starts every vCPU on `io`. With `state`, each end is also reported
        /// the way `Vmm::run` reports it, so the controller sees it.
        fn start(vcpus: Vec<Vcpu>, io: &IoBuses, state: Option<Arc<ExitState>>) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, ends) = channel();
            let handles = vcpus
                .into_iter()
                .map(|v| {
                    let tx = tx.clone();
                    let state = state.clone();
                    v.start(io.clone(), stop.clone(), move |index, end| {
                        if let Some(state) = state {
                            match &end {
                                VcpuEnd::Guest(GuestStop::Halted) => {
                                    state.report(ExitReason::GuestHalted)
                                }
                                VcpuEnd::Guest(GuestStop::Reset) => {
                                    state.report(ExitReason::GuestReset)
                                }
                                _ => {}
                            }
                        }
                        let _ = tx.send((index, end));
                    })
                    .expect("start the vCPU thread")
                })
                .collect();
            Running {
                handles,
                stop,
                ends,
            }
        }

        /// Waits for `n` vCPUs to end by themselves, each within the watchdog;
        /// stops them all and fails the test if they do not.
        fn wait_ends(&mut self, n: usize) -> Vec<(u8, VcpuEnd)> {
            let mut ends = Vec::new();
            while ends.len() < n {
                match self.ends.recv_timeout(WATCHDOG) {
                    Ok(e) => ends.push(e),
                    Err(RecvTimeoutError::Timeout) => {
                        let all_stopped = self.stop_all();
                        panic!(
                            "watchdog: only {} of {n} vCPUs ended within {WATCHDOG:?} \
                             (ended: {ends:?}; threads stopped: {all_stopped})",
                            ends.len()
                        );
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        panic!("vCPU threads went away without reporting ({ends:?})")
                    }
                }
            }
            ends.sort_by_key(|(i, _)| *i);
            ends
        }

        /// Sets the stop flag and kicks every thread out of KVM_RUN; true if
        /// all of them ended in time.
        fn stop_all(&mut self) -> bool {
            self.stop.store(true, Ordering::Release);
            let mut all = true;
            for h in &mut self.handles {
                all &= h.stop_and_join(Duration::from_secs(2));
            }
            all
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            // The VM and its memory must outlive the threads running on them.
            if !self.stop_all() {
                eprintln!("a vCPU thread did not stop; aborting rather than freeing its VM");
                std::process::abort();
            }
        }
    }

    /// The serial console on the PIO bus as `DeviceManager` places it.
    fn serial_on(io: &mut IoBuses) -> SharedBuf {
        let out = SharedBuf::default();
        let serial = Serial::new(
            EventFdTrigger::new().expect("serial irq eventfd"),
            Box::new(out.clone()),
        );
        io.pio
            .insert(Arc::new(Mutex::new(serial)), SERIAL_PORT, 8)
            .expect("serial on the bus");
        out
    }

    // ---- the tests ----

    #[test]
    fn out_to_com1_reaches_the_serial_console_then_hlt_halts() {
        let code = out_bytes_then_hlt(SERIAL_PORT as u16, b"runm\n");
        let tiny = TinyVm::new(&code);
        let mut io = IoBuses::default();
        let console = serial_on(&mut io);
        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let started = Instant::now();
        let mut run = Running::start(vec![vcpu], &io, None);
        let ends = run.wait_ends(1);
        assert_eq!(ends, vec![(0, VcpuEnd::Guest(GuestStop::Halted))]);
        assert_eq!(
            String::from_utf8_lossy(&console.contents()),
            "runm\n",
            "the console got what the guest sent to port 0x3f8"
        );
        assert!(started.elapsed() < WATCHDOG);
    }

    #[test]
    fn hlt_alone_ends_the_vcpu_halted() {
        let tiny = TinyVm::new(&[HLT]);
        let io = IoBuses::default();
        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let mut run = Running::start(vec![vcpu], &io, None);
        assert_eq!(
            run.wait_ends(1),
            vec![(0, VcpuEnd::Guest(GuestStop::Halted))]
        );
    }

    #[test]
    fn vcpu_that_never_ends_is_stopped_on_request() {
        // The watchdog path itself: a spinning guest ends only when asked.
        let tiny = TinyVm::new(&JMP_SELF);
        let io = IoBuses::default();
        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let mut run = Running::start(vec![vcpu], &io, None);
        assert_eq!(
            run.ends.recv_timeout(Duration::from_millis(100)),
            Err(RecvTimeoutError::Timeout),
            "a spinning guest does not end by itself"
        );
        assert!(run.stop_all(), "the kicked vCPU thread ended");
        assert_eq!(run.ends.recv_timeout(WATCHDOG), Ok((0, VcpuEnd::Requested)));
    }

    #[test]
    fn mmio_write_and_read_reach_a_device_outside_ram() {
        const MMIO_BASE: u64 = MMIO_GAP_START;
        const ANSWER: u32 = 0xcafe_f00d;
        // DS's base is put at the MMIO window, so 16-bit offsets reach it.
        let mut code = vec![
            0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
            0x66, 0xa3, 0x10, 0x00, // mov [ds:0x10], eax
            0x66, 0x31, 0xc0, // xor eax, eax
            0x66, 0xa1, 0x20, 0x00, // mov eax, [ds:0x20]
        ];
        code.extend(mov_dx(REPORT_PORT as u16));
        code.extend([0x66, 0xef]); // out dx, eax
        code.push(HLT);
        let tiny = TinyVm::new(&code);
        const _: () = assert!(
            MMIO_BASE >= MEM_MIB << 20,
            "the device sits outside guest RAM"
        );

        let mmio_dev = Recorder::shared(u64::from(ANSWER));
        let report = Recorder::shared(0);
        let mut io = IoBuses::default();
        io.mmio.insert(mmio_dev.clone(), MMIO_BASE, 0x1000).unwrap();
        io.pio.insert(report.clone(), REPORT_PORT, 4).unwrap();

        let vcpu = tiny.real_mode_vcpu(0, |_, sregs| {
            sregs.ds.base = MMIO_BASE;
        });
        let mut run = Running::start(vec![vcpu], &io, None);
        assert_eq!(
            run.wait_ends(1),
            vec![(0, VcpuEnd::Guest(GuestStop::Halted))]
        );
        assert_eq!(
            mmio_dev.lock().unwrap().log,
            vec![
                Access::Write {
                    offset: 0x10,
                    data: 0x1234_5678u32.to_le_bytes().to_vec()
                },
                Access::Read {
                    offset: 0x20,
                    len: 4
                },
            ],
            "the guest's MMIO write and read reached the device, at offsets in its window"
        );
        assert_eq!(
            report.lock().unwrap().log,
            vec![Access::Write {
                offset: 0,
                data: ANSWER.to_le_bytes().to_vec()
            }],
            "the guest read back what the device answered and reported it"
        );
    }

    #[test]
    fn i8042_reset_command_fires_the_reset_eventfd() {
        // mov al, 0xfe; out 0x64, al; then spin: only the reset ends this guest.
        let mut code = mov_al(0xfe);
        code.extend([0xe6, 0x64]);
        code.extend(JMP_SELF);
        let tiny = TinyVm::new(&code);
        let reset = EventFdTrigger::new().unwrap();
        let reset_evt = reset.try_clone().unwrap();
        let mut io = IoBuses::default();
        io.pio
            .insert(Arc::new(Mutex::new(I8042::new(reset))), I8042_PORT, 5)
            .unwrap();
        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let mut run = Running::start(vec![vcpu], &io, None);

        let deadline = Instant::now() + WATCHDOG;
        let fired = loop {
            match reset_evt.0.read() {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        run.stop_all();
                        panic!("watchdog: the i8042 reset eventfd did not fire in {WATCHDOG:?}");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("reading the reset eventfd: {e}"),
            }
        };
        assert_eq!(fired, 1, "one reset command, one event");
        assert!(run.stop_all());
        assert_eq!(run.ends.recv_timeout(WATCHDOG), Ok((0, VcpuEnd::Requested)));
    }

    #[test]
    fn i8042_reset_through_the_controller_is_a_clean_reset_exit() {
        // The same guest, with the pieces `Vmm::run` uses: the i8042's eventfd
        // watched by the Controller on a real event manager, ExitState, and the
        // report the binary turns into its exit status.
        let mut code = mov_al(0xfe);
        code.extend([0xe6, 0x64]);
        code.extend(JMP_SELF);
        let tiny = TinyVm::new(&code);
        let reset = EventFdTrigger::new().unwrap();
        let reset_evt = reset.0.try_clone().unwrap();
        let mut io = IoBuses::default();
        io.pio
            .insert(Arc::new(Mutex::new(I8042::new(reset))), I8042_PORT, 5)
            .unwrap();

        let state = ExitState::new().unwrap();
        let controller = Arc::new(Mutex::new(Controller::new(state.clone(), reset_evt, None)));
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(controller.clone());

        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let mut run = Running::start(vec![vcpu], &io, Some(state.clone()));
        let deadline = Instant::now() + WATCHDOG;
        while !controller.lock().unwrap().done() {
            if Instant::now() > deadline {
                run.stop_all();
                panic!("watchdog: the controller did not end the VM within {WATCHDOG:?}");
            }
            em.run_with_timeout(50).expect("event loop");
        }
        assert!(run.stop_all());
        assert_eq!(
            run.ends.recv_timeout(WATCHDOG),
            Ok((0, VcpuEnd::Requested)),
            "the vCPU ran until the VMM stopped it"
        );
        let reason = state.reason();
        assert_eq!(reason, Some(ExitReason::GuestReset));
        let report = ExitReport::from_reason(reason.unwrap(), None);
        assert_eq!(report, ExitReport::Clean("reset".into()));
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn two_vcpus_both_run_and_halt() {
        // The same code for both: each reports the byte preset in its AL.
        let mut code = mov_dx(REPORT_PORT as u16);
        code.push(OUT_DX_AL);
        code.push(HLT);
        let tiny = TinyVm::new(&code);
        let report = Recorder::shared(0);
        let mut io = IoBuses::default();
        io.pio.insert(report.clone(), REPORT_PORT, 1).unwrap();
        let vcpus = (0..2u8)
            .map(|id| {
                tiny.real_mode_vcpu(id, |regs, _| {
                    regs.rax = u64::from(b'A' + id);
                })
            })
            .collect();
        let mut run = Running::start(vcpus, &io, None);
        assert_eq!(
            run.wait_ends(2),
            vec![
                (0, VcpuEnd::Guest(GuestStop::Halted)),
                (1, VcpuEnd::Guest(GuestStop::Halted)),
            ]
        );
        let mut got: Vec<Vec<u8>> = report
            .lock()
            .unwrap()
            .log
            .iter()
            .map(|a| match a {
                Access::Write { data, .. } => data.clone(),
                Access::Read { .. } => panic!("unexpected read {a:?}"),
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![b"A".to_vec(), b"B".to_vec()]);
    }

    /// Flat 32-bit protected mode without paging (CS 0x08, data 0x10, base 0,
    /// 4 GiB limit), set through the hidden segment state: no GDT needed.
    fn flat_protected_mode(sregs: &mut kvm_bindings::kvm_sregs) {
        sregs.cr0 |= 1; // PE
        let flat = |selector: u16, type_: u8| kvm_bindings::kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = flat(0x08, 0xb); // execute/read, accessed
        for seg in [
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
            &mut sregs.ss,
        ] {
            *seg = flat(0x10, 0x3); // read/write, accessed
        }
    }

    #[test]
    fn triple_fault_ends_the_vcpu_with_reset() {
        // Protected mode with an IDT limit of 0: no vector can be delivered, so
        // the #UD of `ud2` becomes #GP, then #DF, then a triple fault, which
        // KVM reports as KVM_EXIT_SHUTDOWN. (Real mode is not used here: an
        // emulated real-mode exception on a PVM host does not honour the limit.)
        let tiny = TinyVm::new(&[0x0f, 0x0b]);
        let vcpu = tiny.real_mode_vcpu(0, |regs, sregs| {
            flat_protected_mode(sregs);
            sregs.idt.base = 0;
            sregs.idt.limit = 0;
            regs.rsp = 0x8000;
        });
        let io = IoBuses::default();
        let mut run = Running::start(vec![vcpu], &io, None);
        assert_eq!(
            run.wait_ends(1),
            vec![(0, VcpuEnd::Guest(GuestStop::Reset))]
        );
    }

    #[test]
    fn flat_protected_mode_guest_halts() {
        // The control for the triple-fault test: the same mode runs code fine.
        let mut code = vec![0x66]; // 16-bit operand in 32-bit code: mov dx, imm16
        code.extend(mov_dx(REPORT_PORT as u16));
        code.extend(mov_al(b'P'));
        code.extend([OUT_DX_AL, HLT]);
        let tiny = TinyVm::new(&code);
        let report = Recorder::shared(0);
        let mut io = IoBuses::default();
        io.pio.insert(report.clone(), REPORT_PORT, 1).unwrap();
        let vcpu = tiny.real_mode_vcpu(0, |regs, sregs| {
            flat_protected_mode(sregs);
            regs.rsp = 0x8000;
        });
        let mut run = Running::start(vec![vcpu], &io, None);
        assert_eq!(
            run.wait_ends(1),
            vec![(0, VcpuEnd::Guest(GuestStop::Halted))]
        );
        assert_eq!(
            report.lock().unwrap().log,
            vec![Access::Write {
                offset: 0,
                data: b"P".to_vec()
            }]
        );
    }

    #[test]
    fn executing_outside_guest_memory_fails_the_vcpu_with_its_rip() {
        // jmp far 0xffff:0x0010 = linear 0x10_0000, the first byte past the
        // 1 MiB of RAM: KVM cannot fetch an instruction there and reports an
        // internal (emulation) error; the failure must name the guest's RIP.
        let tiny = TinyVm::new(&[0xea, 0x10, 0x00, 0xff, 0xff]);
        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let io = IoBuses::default();
        let mut run = Running::start(vec![vcpu], &io, None);
        let ends = run.wait_ends(1);
        let [(0, VcpuEnd::Failed(msg))] = ends.as_slice() else {
            panic!("expected vCPU 0 to fail, got {ends:?}");
        };
        assert!(msg.contains("KVM internal error"), "{msg}");
        assert!(msg.contains("on vCPU 0 at guest RIP 0x10"), "{msg}");
        let report = ExitReport::from_reason(ExitReason::VcpuFailed(msg.clone()), None);
        assert_eq!(report.exit_code(), 3);
        assert_eq!(report.to_string(), *msg);
    }

    /// Lets a guest that never ends run for `d`, then stops it.
    fn run_for(vcpu: Vcpu, io: &IoBuses, d: Duration) {
        let mut run = Running::start(vec![vcpu], io, None);
        assert_eq!(
            run.ends.recv_timeout(d),
            Err(RecvTimeoutError::Timeout),
            "the looping guest ended by itself"
        );
        assert!(run.stop_all(), "the looping vCPU stopped on request");
    }

    #[test]
    fn a_guest_flooding_the_serial_port_leaves_the_console_file_within_its_cap() {
        // Small, so a guest making one exit per byte passes it many times
        // over within the test's time even on a slow (PVM) host.
        const CAP: u64 = 1024;
        // mov dx, 0x3f8; mov al, 'x'; l: out dx, al; jmp l
        let mut code = mov_dx(SERIAL_PORT as u16);
        code.extend(mov_al(b'x'));
        code.extend([OUT_DX_AL, 0xeb, 0xfd]);
        let tiny = TinyVm::new(&code);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let console = vmm::console::open(&vmm::config::Console::File(path.clone()), CAP)
            .expect("open the console file");
        let mut io = IoBuses::default();
        let serial = Serial::new(EventFdTrigger::new().unwrap(), console);
        let serial = Arc::new(Mutex::new(serial));
        io.pio.insert(serial.clone(), SERIAL_PORT, 8).unwrap();
        let vcpu = tiny.real_mode_vcpu(0, |_, _| {});
        let mut run = Running::start(vec![vcpu], &io, None);
        // Run until the file has been cut at least five times over (the cap
        // passed again and again), with a watchdog.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut max_seen = 0u64;
        let mut cuts = 0;
        let mut last = 0u64;
        while cuts < 5 {
            assert!(
                Instant::now() < deadline,
                "watchdog: the guest did not fill its console 5 times in 20 s"
            );
            let len = std::fs::metadata(&path).unwrap().len();
            if len < last {
                cuts += 1;
            }
            last = len;
            max_seen = max_seen.max(len);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(run.stop_all(), "the looping vCPU stopped on request");
        serial.lock().unwrap().flush();
        assert!(max_seen <= CAP, "the console file reached {max_seen} bytes");
        let text = std::fs::read(&path).unwrap();
        assert!(
            text.len() as u64 <= CAP,
            "the console file grew to {} bytes, past its cap of {CAP}",
            text.len()
        );
        assert!(
            text.starts_with(vmm::console::CUT_MARKER),
            "the guest wrote more than the cap, so the file was cut ({} bytes)",
            text.len()
        );
        assert!(text.ends_with(b"xxxx"), "the newest output is kept");
    }

    #[test]
    fn a_guest_poking_unmapped_mmio_in_a_loop_leaves_the_log_within_its_cap() {
        // The only test here that installs the process's logger.
        const CAP: u64 = 4096;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        let file = std::fs::File::create(&path).unwrap();
        vmm::logger::Logger::new(log::LevelFilter::Debug, CAP, Box::new(file))
            .install()
            .expect("no other test installs a logger");
        // DS at the MMIO gap, where nothing is mapped here:
        // l: mov [ds:0x10], eax; jmp l
        let code = [0x66, 0xa3, 0x10, 0x00, 0xeb, 0xfa];
        let tiny = TinyVm::new(&code);
        let io = IoBuses::default();
        let vcpu = tiny.real_mode_vcpu(0, |_, sregs| {
            sregs.ds.base = MMIO_GAP_START;
        });
        run_for(vcpu, &io, Duration::from_millis(1500));
        log::logger().flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let pokes = text.matches("unclaimed MMIO write").count();
        assert!(
            pokes > 0,
            "the guest's writes were logged at debug level:\n{text}"
        );
        // Two windows of one call site at most in 1.5 s, whatever the guest does.
        assert!(
            pokes <= 2 * vmm::logger::BURST as usize,
            "{pokes} lines of one guest-triggered message: not rate-limited"
        );
        assert!(
            text.contains("more like the next were suppressed"),
            "the suppressed lines are counted:\n{text}"
        );
        assert!(text.len() as u64 <= CAP + 200, "{} bytes", text.len());
    }
}
