#include "keel_curl.h"

CURLcode keel_curl_setopt_long(CURL *curl, CURLoption option, long value) {
    return curl_easy_setopt(curl, option, value);
}

CURLcode keel_curl_setopt_string(CURL *curl, CURLoption option, const char *value) {
    return curl_easy_setopt(curl, option, value);
}

CURLcode keel_curl_setopt_pointer(CURL *curl, CURLoption option, void *value) {
    return curl_easy_setopt(curl, option, value);
}

CURLcode keel_curl_set_write_callback(CURL *curl, keel_curl_data_callback callback, void *user) {
    CURLcode code = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, callback);
    return code != CURLE_OK ? code : curl_easy_setopt(curl, CURLOPT_WRITEDATA, user);
}

CURLcode keel_curl_set_header_callback(CURL *curl, keel_curl_data_callback callback, void *user) {
    CURLcode code = curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, callback);
    return code != CURLE_OK ? code : curl_easy_setopt(curl, CURLOPT_HEADERDATA, user);
}

CURLcode keel_curl_set_progress_callback(CURL *curl, keel_curl_progress_callback callback, void *user) {
    CURLcode code = curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, callback);
    if (code == CURLE_OK) code = curl_easy_setopt(curl, CURLOPT_XFERINFODATA, user);
    return code != CURLE_OK ? code : curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
}

CURLcode keel_curl_getinfo_long(CURL *curl, CURLINFO info, long *value) {
    return curl_easy_getinfo(curl, info, value);
}

CURLcode keel_curl_set_sockopt_callback(CURL *curl, keel_curl_sockopt_callback callback, void *user) {
    CURLcode code = curl_easy_setopt(curl, CURLOPT_SOCKOPTFUNCTION, callback);
    return code != CURLE_OK ? code : curl_easy_setopt(curl, CURLOPT_SOCKOPTDATA, user);
}
