/* keyfile: see keyfile.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"
#include "macro.h"

/* Longer lines are malformed: a key line is about 50 bytes. */
#define KEYFILE_MAX_LINE 1024

static const char z85_alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";

bool keyfile_key_valid(const char *s, size_t len) {
        if (len != KEYFILE_KEY_LEN)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!s[i] || !strchr(z85_alphabet, s[i]))
                        return false;
        return true;
}

int keyfile_parse_line(const char *line, const char **ret_name, char ret_key[KEYFILE_KEY_LEN + 1]) {
        const char *name = "public", *p = line + strspn(line, " \t\r");
        size_t n;

        if (!*p || *p == '#')
                return 1;
        if (strncmp(p, "public", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
                p += 6;
        else if (strncmp(p, "secret", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
                name = "secret";
                p += 6;
        }
        p += strspn(p, " \t");
        n = strcspn(p, " \t\r");
        /* After the key: nothing, or a label after blanks. */
        if (!keyfile_key_valid(p, n))
                return -EBADMSG;
        memcpy(ret_key, p, n);
        ret_key[n] = 0;
        *ret_name = name;
        return 0;
}

int keyfile_foreach(const char *path, KeyfileLineFn fn, void *userdata, unsigned *ret_line,
                    mode_t *ret_mode) {
        _cleanup_free_ char *line = NULL;
        char key[KEYFILE_KEY_LEN + 1];
        unsigned lineno = 0;
        size_t size = 0;
        struct stat st;
        const char *name;
        ssize_t n;
        FILE *f;
        int r = 0;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        if (fstat(fileno(f), &st) < 0)
                r = -errno;
        while (r >= 0 && (n = getline(&line, &size, f)) >= 0) {
                lineno++;
                if (n > KEYFILE_MAX_LINE) {
                        r = -EBADMSG;
                        break;
                }
                line[strcspn(line, "\n")] = 0;
                r = keyfile_parse_line(line, &name, key);
                if (r == 0)
                        r = fn(userdata, name, key);
        }
        if (r >= 0 && ferror(f))
                r = -EIO;
        fclose(f);
        if (ret_line)
                *ret_line = lineno;
        if (ret_mode)
                *ret_mode = st.st_mode;
        return r < 0 ? r : 0;
}

typedef struct KeyPair {
        char public_key[KEYFILE_KEY_LEN + 1];
        char secret_key[KEYFILE_KEY_LEN + 1];
} KeyPair;

static int take_key(void *userdata, const char *name, const char *key) {
        KeyPair *kp = userdata;

        strcpy(strcmp(name, "secret") == 0 ? kp->secret_key : kp->public_key, key);
        return 0;
}

int keyfile_read(const char *path, char *ret_public, char *ret_secret) {
        KeyPair kp = {};
        mode_t mode = 0;
        int r = keyfile_foreach(path, take_key, &kp, NULL, &mode);

        if (r < 0)
                return r;
        /* A secret readable by others is a secret no more: refuse it, as ssh does. */
        if (kp.secret_key[0] && (mode & 077))
                return -EPERM;
        if ((ret_public && !kp.public_key[0]) || (ret_secret && !kp.secret_key[0]))
                return -ENOKEY;
        if (ret_public)
                strcpy(ret_public, kp.public_key);
        if (ret_secret)
                strcpy(ret_secret, kp.secret_key);
        return 0;
}

int keyfile_public(const char *arg, char ret_key[KEYFILE_KEY_LEN + 1]) {
        if (keyfile_key_valid(arg, strlen(arg)) && access(arg, F_OK) < 0) {
                strcpy(ret_key, arg);
                return 0;
        }
        return keyfile_read(arg, ret_key, NULL);
}

/* Creates `path` with `mode` and writes `text` to it. Returns 0 or -errno. */
static int write_new(const char *path, mode_t mode, const char *text) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        size_t len = strlen(text);

        if (fd < 0)
                return -errno;
        /* Whatever the umask: the secret's mode is what keyfile_read() checks. */
        if (fchmod(fd, mode) < 0)
                return -errno;
        if (write(fd, text, len) != (ssize_t) len)
                return errno ? -errno : -EIO;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int keyfile_write(const char *prefix, const char *public_key, const char *secret_key) {
        _cleanup_free_ char *key_path = NULL, *pub_path = NULL, *key_text = NULL, *pub_text = NULL;
        int r;

        if (asprintf(&key_path, "%s.key", prefix) < 0 ||
            asprintf(&pub_path, "%s.pub", prefix) < 0 ||
            asprintf(&key_text,
                     "# futured CURVE key pair, written by futurectl keygen: keep it private\n"
                     "public %s\nsecret %s\n",
                     public_key, secret_key) < 0 ||
            asprintf(&pub_text, "# futured CURVE public key\npublic %s\n", public_key) < 0)
                return -ENOMEM;
        if (access(key_path, F_OK) == 0 || access(pub_path, F_OK) == 0)
                return -EEXIST;
        r = write_new(key_path, 0600, key_text);
        if (r < 0)
                return r;
        r = write_new(pub_path, 0644, pub_text);
        if (r < 0)
                (void) unlink(key_path);
        return r;
}
