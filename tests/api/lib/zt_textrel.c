/* A plugin for tests/api/deepbind.c with a text relocation: a function-pointer table holding free
 * in a read-only section (linked -z notext: DT_TEXTREL; glibc writes it under a temporary
 * mprotect).  Opened with RTLD_DEEPBIND, the table's slot holds glibc's free and lies in a page
 * that is neither writable nor RELRO: rebinding it must restore the page's protection around the
 * write (a plain store crashed). */
__asm__(".section .rodata\n.globl zt_ro_free\n.p2align 3\nzt_ro_free: .quad free\n.text\n");
extern void (*const zt_ro_free[1])(void *);
void zt_textrel_free(void *p) { zt_ro_free[0](p); }
