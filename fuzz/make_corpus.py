#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/) from the vendor documents' examples.

The JSON and form examples are those of baidu-faceprint-h5-api.txt, juhe-verifyface-api.txt,
megvii-faceid-lite-callbacks.txt and FACTS.md (the shared vendor documents), copied as printed, plus the few fixes
a parser needs to get past them (stray spaces inside Megvii keys, missing commas in Baidu's result/stat example;
both the printed and the fixed form are seeds). Identities are synthetic: names are the documents' placeholders,
ID numbers are masked as in the documents or generated here with a valid GB 11643 check character and a
1900-01-0x birth date. Run from the repository root: python3 fuzz/make_corpus.py
"""
import hashlib
import json
import os
import urllib.parse

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MEGVII_SECRET = "fuzz-megvii-secret"  # facegate_fuzz::MEGVII_SECRET


def synthetic_id(region, birth, seq):
    first17 = f"{region}{birth}{seq:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(first17, weights))
    return first17 + "10X98765432"[total % 11]


ID_A = synthetic_id("110101", "19000101", 901)
ID_B = synthetic_id("440305", "19000102", 902)
ID_HMT = synthetic_id("810000", "19000103", 903)

seeds = {}


def add(target, name, content):
    seeds.setdefault(target, {})[name] = content.encode() if isinstance(content, str) else content


# --- Megvii (megvii-faceid-lite-callbacks.txt; keys without the document's stray spaces)
megvii_doc = {
    "status": "OK",
    "biz_info": {"biz_extra_data": "...", "biz_id": "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1",
                 "biz_no": "cc47190f-5502-44a2-ab74-ea4f0f649f61"},
    "idcard_info": {
        "idcard_mode": "1", "idcard_uneditable_field": "idcard_number, idcard_valid_date",
        "idcard_number": "xxxxxx19910602xxxx", "idcard_name": "陈AB", "idcard_valid_date": "2010.11.13-2020.11.13",
        "idcard_issued_by": "北京市公安局",
        "front_side": {"ocr_result": {
            "address": "北京市海淀区XXXX", "birthday": {"day": "2", "month": "6", "year": "1991"}, "gender": "男",
            "id_card_number": "xxxxxx19910602xxxx", "name": "陈XX", "race": "汉",
            "legality": {"ID Photo": 0.855, "Temporary ID Photo ": 0, "Photocopy": 0.049, "Screen": 0.096,
                         "Edited": 0}}, "upload_times": 1},
        "back_side": {"ocr_result": {
            "issued_by": " 北京市公安局海淀分局", "valid_date": "2010.11.13-2020.11.13",
            "legality": {"ID Photo": 0.855, "Temporary ID Photo ": 0, "Photocopy": 0.049, "Screen": 0.096,
                         "Edited": 0}}, "upload_times": 2},
        "ocr_front_quality": {"gender": {"quality": 0.925, "logic": 0, "result": "男"},
                              "birth_year": {"quality": 0.942, "logic": 0, "result": "1996"}},
        "ocr_back_quality": {"valid_date_start": {"quality": 0.995, "logic": 0, "result": "20140515"}}},
    "liveness_result": {
        "result": "PASS", "procedure_type": "will",
        "details": {"UPLOAD_TIMES": 5, "FACE_NOT_FOUND": 0, "LOW_FACE_QUALITY": 0, "INVALID_VIDEO_DURATION": 1,
                    "SR_ERROR": 2, "NOT_SYNCHRONIZED": 1, "VIDEO_FORMAT_UNSUPPORTED": 0, "NO_AUDIO": 0},
        "face_genuineness": {"synthetic_face_confidence": 0.88, "synthetic_face_threshold": 0.5,
                             "mask_confidence": 0.32, "mask_threshold": 0.5, "screen_replay_confidence": 0,
                             "screen_replay_threshold": 0.5}},
    "verify_result": {
        "verify_time": 1462259763,
        "result_faceid": {"confidence": 68.918, "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
        "result_ref1": {"confidence": 68.918, "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
        "result_idcard_photo": {"confidence": 68.918,
                                "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
        "result_idcard_datasource": {"confidence": 68.918,
                                     "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
        "id_exceptions": {"id_attacked": 0, "id_photo_monochrome": 0}},
    "will_result": [{"will_error_message": "", "result": "PASS"}],
    "multifaces_tag": 0,
}
biz = {"biz_id": "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1", "biz_no": "ses_fuzz"}
megvii_data = {
    "doc_example": json.dumps(megvii_doc, ensure_ascii=False, indent=2),
    "will_fail": json.dumps({"status": "OK", "biz_info": biz, "liveness_result": {"result": "FAIL"},
                             "will_result": [{"result": "FAIL", "will_error_message": "ACTION_FAIL"}]}),
    "webrtc": json.dumps({"status": "WEBRTC_UNSUPPORTED", "fail_reason": "WEBRTC_UNSUPPORTED", "biz_info": biz}),
    "processing": json.dumps({"status": "PROCESSING", "biz_info": biz}),
    "cancelled": json.dumps({"status": "CANCELLED", "biz_info": biz}),
    "timeout": json.dumps({"status": "TIMEOUT", "biz_info": biz}),
    "failed": json.dumps({"status": "FAILED", "fail_reason": "NETWORK_ERROR", "biz_info": biz}),
    "name_mismatch": json.dumps({"status": "OK", "biz_info": biz, "liveness_result": {"result": "PASS"},
                                 "verify_result": {"error_message": "ID_NUMBER_NAME_NOT_MATCH"}}),
    "ref_pass": json.dumps({"status": "OK", "biz_info": biz, "liveness_result": {"result": "PASS"},
                            "verify_result": {"error_message": None, "result_ref1": {
                                "confidence": 88.5, "thresholds": {"1e-3": 64, "1e-4": 69}}},
                            "idcard_info": {"idcard_number": ID_A, "idcard_name": "张三"}}),
}
for name, text in megvii_data.items():
    add("megvii_callback_data", name, text)
    signature = hashlib.sha1((MEGVII_SECRET + text).encode()).hexdigest()
    add("megvii_callback_form", name,
        "data=" + urllib.parse.quote_plus(text) + "&sign=" + signature)
# The document's sign example (a signature by another secret).
add("megvii_callback_form", "doc_sign",
    "data=" + urllib.parse.quote(megvii_data["cancelled"]) + "&sign=ac041f49940c5afb2640a251633a8029ae69c1d5")
add("megvii_callback_form", "duplicate_data", "data=%7B%7D&data=%7B%7D&sign=00")

token = {"request_id": "1461740007,71eeb124-08f0-47b3-8fc8-ac048cfa1372", "time_used": 204,
         "token": "aa9fd8d0a1b34a7ea2b5a0c1c0a7e3a1",
         "biz_id": "1461740007,ac5b0a28-7e49-4b05-8efc-1eb8f6fb1a9e", "expired_time": 1461743607}
add("megvii_get_token", "ok", json.dumps(token))
add("megvii_get_token", "ok_biz_no", json.dumps(dict(token, biz_no="ses_fuzz")))
errors = ["AUTHENTICATION_ERROR", "AUTHORIZATION_ERROR:Denied", "CONCURRENCY_LIMIT_EXCEEDED",
          "MISSING_ARGUMENTS: idcard_number", "BAD_ARGUMENTS:idcard_mode", "API_NOT_FOUND", "INTERNAL_ERROR",
          "RESULT_NOT_FOUND"]
for i, e in enumerate(errors):
    body = json.dumps({"error_message": e, "request_id": "1461740007,71eeb124-08f0-47b3-8fc8-ac048cfa1372",
                       "time_used": 3})
    add("megvii_get_token" if e != "RESULT_NOT_FOUND" else "megvii_get_result", f"error_{i}", body)
add("megvii_get_result", "error_auth", json.dumps({"error_message": "AUTHENTICATION_ERROR"}))
result = dict(json.loads(megvii_data["ref_pass"]), request_id="1462259763,9a1c1c2e-1e4f-4b0e-8d8a-000000000000",
              time_used=5, images={"image_best": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="})
add("megvii_get_result", "ok_images", json.dumps(result))
add("megvii_get_result", "doc_example", json.dumps(dict(megvii_doc, request_id="1,r", time_used=5)))
add("megvii_get_result", "not_started", json.dumps({"status": "NOT_STARTED", "biz_info": biz,
                                                     "request_id": "1,r", "time_used": 1}))

# --- Baidu (baidu-faceprint-h5-api.txt, FACTS.md §1.1-1.3)
add("baidu_token", "ok", json.dumps({
    "refresh_token": "25.0123456789abcdef0123456789abcdef.315360000.1798761600.282335-00000000",
    "expires_in": 2592000, "session_key": "x", "scope": "public wise_adapt",
    "access_token": "24.0123456789abcdef0123456789abcdef.2592000.1767225600.282335-00000000",
    "session_secret": "y"}))
add("baidu_token", "unknown_client", '{"error_description":"unknown client id","error":"invalid_client"}')
add("baidu_token", "bad_secret", '{"error_description":"Client authentication failed","error":"invalid_client"}')

baidu_errors = {
    "envelope_283400": '{"success":false,"result":null,"code":283400,"message":"服务异常,请稍后再试",'
                       '"log_id":"161763046823255"}',
    "token_gone": '{"success":false,"result":null,"code":216100,"message":"Token无效或者已过期","log_id":"1"}',
    "gateway_18": '{"error_code":18,"error_msg":"Open api qps request limit reached"}',
    "gateway_110": '{"error_code":110,"error_msg":"Access token invalid or no longer valid"}',
    "gateway_111": '{"error_code":111,"error_msg":"Access token expired"}',
}
doc_replies = {
    "baidu_generate": {
        "generate": '{\n    "success": true,\n    "result": {\n        "verify_token": "Yz9rWITm4vak16PBAh5x8oG7"\n'
                    '    },\n    "log_id": "1814798895"\n}',
        "idcard_submit": '{\n    "success": true,\n    "result": 1,\n    "log_id": "1244068892"\n}',
        "upload_match_image": '{\n  "success": true,\n  "result": null,\n  "log_id": "1329130892"\n}',
    },
    "baidu_simple": {
        "simple": '{"success": true, "result": {"image":'
                  '"https://brain.baidu.com/solution/faceprint/image/query?verify_token=xxxxxx"},'
                  ' "log_id": "1054986003"}',
    },
    "baidu_detail": {
        "detail": json.dumps({"success": True, "result": {
            "verify_result": {"score": 93.7835, "liveness_score": 0.9672966, "spoofing": 0.0},
            "idcard_ocr_result": {"birthday": "19960216", "issue_authority": "胶南市公安局",
                                  "address": "山东省***********", "gender": "女", "nation": "汉",
                                  "expire_time": "20221103", "name": "柴*", "issue_time": "20121103",
                                  "id_card_number": "370***********5826"},
            "idcard_images": {"front_base64": "/9j/4AAQSkZJRgAB....", "back_base64": "/9j/4AAQSkZJRgAB...."},
            "idcard_confirm": {"idcard_number": "370***********5826", "name": "柴*"}},
            "log_id": "160931948204246"}, ensure_ascii=False, indent=2),
        "confirm_only": json.dumps({"success": True, "result": {
            "verify_result": {"score": "88", "liveness_score": "0.9", "spoofing": "0"},
            "idcard_confirm": {"idcard_number": ID_B, "name": "张三"}}, "log_id": 1}, ensure_ascii=False),
        "not_started": '{"success":false,"result":null,"code":283450,"message":"认证尚未开始","log_id":"2"}',
    },
    "baidu_media": {
        "media": '{"success": true, "result": {"processVideo": ["http://bj.bcebos.com/v1/aa.mp4"],'
                 ' "video": ["http://bj.bcebos.com/v1/aa.mp4"], "images": ["http://bj.bcebos.com/v1/aa.jpg"],'
                 ' "extInfo": null}, "log_id": "1534116864874049322"}',
    },
}
stat_apis = ["Verify_FIN", "Sessioncode", "OCR", "verify", "VideoLiveness", "Livenesscolorful", "VerifySec"]
stat_rows = ",\n".join(f'        "{a}": [{{"error_code": 0, "count": {2 if a == "OCR" else 1}}}]'
                       for a in stat_apis)
doc_replies["baidu_stat"] = {
    # As printed: two commas are missing (after VideoLiveness and Livenesscolorful).
    "stat_as_printed": '{\n    "success": true,\n    "result": {\n' + stat_rows.replace(
        '"VideoLiveness": [{"error_code": 0, "count": 1}],', '"VideoLiveness": [{"error_code": 0, "count": 1}]'
    ).replace('"Livenesscolorful": [{"error_code": 0, "count": 1}],',
              '"Livenesscolorful": [{"error_code": 0, "count": 1}]') + '\n    },\n    "log_id": "1405335905"\n}',
    "stat": '{\n    "success": true,\n    "result": {\n' + stat_rows + '\n    },\n    "log_id": "1405335905"\n}',
    "stat_strings": '{"success":true,"result":{"Verify_FIN":[{"error_code":"222351","count":"3"}]},"log_id":"1"}',
}
attempt = {
    "order": 1, "is_verify_passed": True, "code": "0", "message": "", "verify_time": "2023-10-10 10:10:10",
    "is_charged": True, "charge_type": "verify", "charge_time": "2023-10-10 10:10:10", "is_ocr_charge": True,
    "ocr_count": 2, "ocr_charge_time": "2023-10-10 10:10:10",
    "verify_detail": {"face_image": "xxx.jpg", "verify_log_id": "xxx", "score": 89.9, "threshold": 80,
                      "liveness_score": 80, "spoofing_score": 80, "risk_level": "1", "risk_tag": "xxx",
                      "is_demote": False},
    "idcard_confirm": {"name": "张三", "idcard_number": ID_A, "idcard_type": "0",
                       "idcard_ocr_result": {"address": "江西省赣州市", "birthday": "2020-10-10 10:10:10",
                                             "name": "张三", "idcard_number": ID_A, "idcard_type": "0",
                                             "gender": "男", "nation": "汉族", "issue_time": "2020-10-10 10:10:10",
                                             "expire_time": "2028-10-10 10:10:10",
                                             "issue_authority": "江西省赣州市"},
                       "idcard_images": {"front_image": "xxx.jpg", "back_image": "xxx.jpg"}}}
failed = {"order": 2, "is_verify_passed": False, "code": "222351", "message": "身份证号与姓名不匹配",
          "verify_time": "2023-10-10 9:5:1", "is_charged": False}
getall = {"verify_count": 1, "ocr_charge_count": 1, "match_charge_count": 1, "verify_charge_count": 1,
          "verify_result": [attempt]}
doc_replies["baidu_getall"] = {
    "getall": json.dumps({"success": True, "log_id": "123456", "result": getall}, ensure_ascii=False, indent=4),
    "getall_failed": json.dumps({"success": True, "log_id": "1", "result": {
        "verify_count": 2, "verify_result": [failed, dict(failed, order=3, code="223120", message="活体检测未通过")]}},
        ensure_ascii=False),
    "getall_empty": '{"success":true,"log_id":"1","result":{"verify_count":0,"verify_result":[]}}',
}
for target, replies in doc_replies.items():
    for name, text in replies.items():
        add(target, name, text)
    for name, text in baidu_errors.items():
        add(target, name, text)
for t in ["2023-10-10 10:10:10", "2023-1-5 0:0:0", "2020-02-29 23:59:60", "1900-01-01 00:00:00"]:
    add("baidu_time", t.replace(" ", "_").replace(":", ""), t)

# --- Juhe (juhe-verifyface-api.txt)
juhe = {
    "res1": '{\n  "reason": "成功",\n  "result": {\n    "res": 1,\n    "score": "96",\n'
            '    "message": "身份证号与姓名匹配，且比对成功",\n    "orderid": "JH264117091113513280159458"\n  },\n'
            '  "error_code": 0\n}',
    "res2": '{\n  "reason": "成功",\n  "result": {\n    "res": 2,\n    "code": "3004",\n'
            '    "message": "身份证核查成功，但人脸比对失败",\n    "desc": "用户上传的照片检测不到人脸",\n'
            '    "orderid": "JH264117091113492036501983"\n  },\n  "error_code": 0\n}',
    # As printed in the first section (a comma where error_code was cut off).
    "res2_as_printed": '{\n  "reason": "成功",\n  "result": {\n    "res": 2,\n    "code": "3004",\n'
                       '    "message": "身份证核查成功，但人脸比对失败",\n    "desc": "用户上传的照片检测不到人脸",\n'
                       '    "orderid": "JH264117091113492036501983"\n  },\n}',
    "res3": '{\n  "reason": "成功",\n  "result": {\n    "res": 3,\n    "message": "身份证号与姓名不匹配",\n'
            '    "orderid": "JH264117091113492036501983"\n  },\n  "error_code": 0\n}',
    "res1_low": '{"reason":"成功","result":{"res":1,"score":"65.5","message":"x","orderid":"JH1"},"error_code":0}',
    "key_error": '{"resultcode":"101","reason":"错误的请求KEY","result":null,"error_code":10001}',
    "service_226403": '{"reason":"参数错误:idcard","result":null,"error_code":226403}',
}
for name, text in juhe.items():
    add("juhe_reply", name, text)

# --- Validators
for name, value in {"mainland": ID_A, "mainland_b": ID_B, "hmt": ID_HMT, "lowercase_x": None,
                    "padded": " " + ID_A + "\n", "fifteen_digits": "110101000101901",
                    "wrong_check": ID_A[:17] + ("0" if ID_A[17] != "0" else "1")}.items():
    if value is None:
        x = next(synthetic_id("110101", "19000104", s) for s in range(1000)
                 if synthetic_id("110101", "19000104", s).endswith("X"))
        value = x[:17] + "x"
    add("id_number", name, value)
for name, value in {"han": "张三", "han4": "测试用户", "latin": "Anna-Maria O'Neil",
                    "uyghur_dot": "阿依古丽·买买提", "combining": "Jose\u0301", "spaces": "  李 四  "}.items():
    add("name", name, value)
for name, value in {"abc": "QUJD", "jpeg_prefix": "/9j/4AAQSkZJRgAB", "png_prefix": "iVBORw0KGgo=",
                    "two_pad": "QQ==", "data_uri": "data:image/jpeg;base64,/9j/"}.items():
    add("base64", name, value)
jpeg = bytes([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10]) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + \
    bytes([0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0xE0, 0x02, 0x80, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03,
           0x11, 0x01, 0xFF, 0xD9])
png = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]) + b"IHDR" + \
    (640).to_bytes(4, "big") + (480).to_bytes(4, "big") + bytes([8, 2, 0, 0, 0, 0, 0, 0, 0])
add("image", "jpeg_sof0", jpeg)
add("image", "png_ihdr", png)
add("image", "gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x21\xF9\x04\x00\x00\x00\x00\x00")

for target, files in seeds.items():
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(ROOT, target, name), "wb") as f:
            f.write(content)
print(sum(len(f) for f in seeds.values()), "seeds in", len(seeds), "targets")
